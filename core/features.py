"""Features shared by training and serving: the one place that turns a window into model inputs.

The agent calls ``FeatureExtractor.extract`` on live windows; ``models.dataset_builder`` calls the very
same method on windows cut from recordings, so a model sees at serve time exactly what it was trained on.
numpy only (librosa, mediapipe, tokenizers): importing this module never imports torch.

- audio: ``core.features_audio`` (29 acoustic descriptors every 20 ms, 16 kHz input)
- vision: ``core.features_vision`` (26 face descriptors per sampled frame; zeros + face_present=0 when
  no face is found; the frames arrive already sampled to ``vision_fps``)
- text: ``core.features_text`` (the model's own fast tokenizer, truncated as in training)

``FeatureSpec`` names all of it (extractors, versions, dims, rates, text length, tokenizer identity); it is
written into every model card and the agent refuses a card whose spec differs from the one it computes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import features_audio, features_text, features_vision
from core.errors import ModelError
from core.features_audio import audio_features, speech_ratio
from core.features_vision import FaceMeshDescriber, face_visible_ratio, no_face_vision
from core.types import SAMPLE_RATE_HZ, Features, Transcript, VideoFrame

__all__ = [
    "FeatureExtractor",
    "FeatureSpec",
    "audio_features",
    "face_visible_ratio",
    "no_face_vision",
    "speech_ratio",
]

log = logging.getLogger(__name__)
DEFAULT_TEXT_MAX_LENGTH = 50  # MMSA MOSI/MOSEI
DEFAULT_VISION_FPS = 10.0


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What a model was trained on; equality is the check between an agent and a model card."""

    tokenizer_sha256: str  # SHA-256 of the model's tokenizer.json
    text_max_length: int = DEFAULT_TEXT_MAX_LENGTH
    vision_fps: float = DEFAULT_VISION_FPS
    audio_extractor: str = features_audio.AUDIO_EXTRACTOR
    audio_version: int = features_audio.AUDIO_VERSION
    audio_dim: int = features_audio.AUDIO_DIM
    audio_sample_rate_hz: int = features_audio.SAMPLE_RATE_HZ
    audio_frame_rate_hz: float = features_audio.FRAME_RATE_HZ
    vision_extractor: str = features_vision.VISION_EXTRACTOR
    vision_version: int = features_vision.VISION_VERSION
    vision_dim: int = features_vision.VISION_DIM
    text_tokenizer: str = "tokenizers:" + features_text.TOKENIZER_FILE
    # the rule applied to a transcript before its tokenizer (core/features_text.py); "none" is left out of to_dict,
    # so the cards of models trained before the rule existed are the spec they always were
    text_normaliser: str = features_text.NO_NORMALISER
    # what lies below this is filtered out of the audio before its descriptors (core/features_audio.py); 0, none,
    # is left out of to_dict like text_normaliser
    audio_highpass_hz: float = features_audio.NO_HIGHPASS

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer_dir: Path,
        *,
        text_max_length: int = DEFAULT_TEXT_MAX_LENGTH,
        vision_fps: float = DEFAULT_VISION_FPS,
        text_normaliser: str = features_text.NO_NORMALISER,
        audio_highpass_hz: float = features_audio.NO_HIGHPASS,
    ) -> FeatureSpec:
        """The spec this code computes with the tokenizer in ``tokenizer_dir``."""
        return cls(
            tokenizer_sha256=features_text.tokenizer_sha256(tokenizer_dir),
            text_max_length=text_max_length,
            vision_fps=float(vision_fps),
            text_normaliser=text_normaliser,
            audio_highpass_hz=float(audio_highpass_hz),
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["text_normaliser"] == features_text.NO_NORMALISER:
            del data["text_normaliser"]
        if data["audio_highpass_hz"] == features_audio.NO_HIGHPASS:
            del data["audio_highpass_hz"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data) - {"text_normaliser", "audio_highpass_hz"})
        if unknown or missing:
            raise ModelError(f"feature spec: unknown keys {unknown}, missing keys {missing}")
        normaliser = data.get("text_normaliser", features_text.NO_NORMALISER)
        if normaliser not in features_text.TEXT_NORMALISERS:
            raise ModelError(f"feature spec: text_normaliser {normaliser!r} is not one this agent applies "
                             f"({', '.join(features_text.TEXT_NORMALISERS)}): a newer agent's model")
        values = dict(data)
        for name in ("vision_fps", "audio_frame_rate_hz", "audio_highpass_hz"):
            if name in values:
                values[name] = float(values[name])
        highpass = values.get("audio_highpass_hz", features_audio.NO_HIGHPASS)
        if not features_audio.NO_HIGHPASS <= highpass < features_audio.SAMPLE_RATE_HZ / 2:
            raise ModelError(f"feature spec: audio_highpass_hz {highpass} is not a cutoff between 0 and "
                             f"{features_audio.SAMPLE_RATE_HZ // 2} Hz")
        return cls(**values)

    def mismatches(self, other: FeatureSpec) -> list[str]:
        """Human-readable differences (``name: ours != theirs``); empty when the specs are equal."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def current(self) -> FeatureSpec:
        """This spec with the extractor fields this code computes (to compare against a stored one)."""
        return FeatureSpec(
            tokenizer_sha256=self.tokenizer_sha256,
            text_max_length=self.text_max_length,
            vision_fps=self.vision_fps,
            text_normaliser=self.text_normaliser,
            audio_highpass_hz=self.audio_highpass_hz,
        )


class FeatureExtractor:
    """Transcript (window + text) -> model inputs; blocking, thread-safe, one FaceMesh per extractor.

    ``use_vision=False`` (a model whose vision branch saw no faces in training) skips FaceMesh and gives
    every window the single "no face" row that frame-less training windows had.
    """

    def __init__(self, spec: FeatureSpec, tokenizer_dir: Path, *, use_vision: bool = True) -> None:
        computed = spec.current()
        problems = computed.mismatches(spec)
        tokenizer_sha = features_text.tokenizer_sha256(tokenizer_dir)
        if tokenizer_sha != spec.tokenizer_sha256:
            problems.append(
                f"tokenizer_sha256: {tokenizer_sha!r} (in {tokenizer_dir}) != {spec.tokenizer_sha256!r}"
            )
        if problems:
            raise ModelError(
                "the model asks for features this agent does not compute (agent != model): "
                + "; ".join(problems)
            )
        self.spec = spec
        self._tokenizer = features_text.TextTokenizer(tokenizer_dir, spec.text_max_length, spec.text_normaliser)
        self._faces = FaceMeshDescriber() if use_vision else None
        features_audio.warm_up()

    @property
    def uses_vision(self) -> bool:
        """False when every window gets the "no face" row: live ingest then has no use for video."""
        return self._faces is not None

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask, token_type_ids: int64 [n] each, n <= text_max_length."""
        return self._tokenizer.tokenize(text)

    def vision_features(self, frames: tuple[VideoFrame, ...] | list[VideoFrame]) -> np.ndarray:
        """float32 [max(len(frames), 1), vision_dim]: one descriptor row per (already sampled) frame."""
        if self._faces is None:
            return no_face_vision(1)
        return self._faces.describe_frames([frame.rgb for frame in frames])

    def extract(self, transcript: Transcript) -> Features:
        """Model inputs of one window (blocking; call it from a worker thread in the agent)."""
        started = time.perf_counter()
        window = transcript.window
        audio = audio_features(window.audio, self.spec.audio_highpass_hz)
        vision = self.vision_features(window.frames)
        ids, mask, type_ids = self.tokenize(transcript.text)
        return Features(
            transcript=transcript,
            input_ids=ids,
            attention_mask=mask,
            token_type_ids=type_ids,
            audio=audio,
            vision=vision,
            speech_ratio=speech_ratio(audio),
            face_visible_ratio=face_visible_ratio(vision),
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def empty(self, transcript: Transcript) -> Features:
        """Features of a window that was not analysed (shed): no audio or vision rows, no text tokens."""
        ids, mask, type_ids = self.tokenize("")
        return Features(
            transcript=transcript,
            input_ids=ids,
            attention_mask=mask,
            token_type_ids=type_ids,
            audio=np.zeros((0, self.spec.audio_dim), dtype=np.float32),
            vision=no_face_vision(0),
            speech_ratio=0.0,
            face_visible_ratio=0.0,
            latency_ms=0.0,
        )

    def close(self) -> None:
        if self._faces is not None:
            self._faces.close()


if SAMPLE_RATE_HZ != features_audio.SAMPLE_RATE_HZ:  # pragma: no cover - a guard against drift
    raise ImportError("core.types.SAMPLE_RATE_HZ and the audio extractor disagree")
