"""The CREMA-D voices of the default model: real actors, the valence listeners heard in the voice alone.

Each clip of the shared corpus (`clips.csv`, Opus at WebRTC's bitrate, fixed actor splits) becomes one sample
through the agent's own path: the file decoder and 16 kHz resampler (`models.dataset_builder.segment_window`),
the utterance windows the agent cuts (Silero VAD, `agent.windows.audio_windows` with the default settings) and
`FeatureExtractor.extract` on each window. A model that learned from whole clips heard ~0.6 s of their quiet
lead-in and tail that no served window has (3.1.0: test r(A) 0.52 on whole clips, 0.46 on the agent's windows).

The text is the sentence the actor read, from `clips.csv`: all twelve are neutral, Whisper transcribes them
almost exactly, and using the gold sentence spares 6,700 Whisper decodes in the build (the bench scores the
same clips with Whisper's transcripts through the replay path). The label is
`models.adapters.crema_d.voice_valence`. Vision is the "no face" row: only the audio could be obtained.

Features are cached per clip under the build's cache folder, keyed by the feature spec and the windowing, so a
rebuild that changes only training does not decode 6,700 files again.

`joined_voices` makes longer training rows: one actor's clips of one intended emotion spoken one after another.
A CREMA-D clip lasts about 2.5 s, a live utterance window up to 15 s; an LSTM that only ever heard 2.5 s of a
real voice drifts on longer ones (measured on the LJ Speech and LibriVox readings: the same audio scored
whole was ~1 point more negative than scored in 2.5 s pieces).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.settings import WindowSettings
from agent.vad import SileroVad, VoiceActivityDetector
from agent.windows import audio_windows
from core.call_codec import CALL_CODEC, CALL_CODEC_REVISION, call_codec_round_trip
from core.errors import ConfigError
from core.features import FeatureExtractor
from core.labels import LabelRow
from core.progress import progress_bar
from core.speaker_reference import centred, reference_over
from default_model.room_hum import ROOM_HUM, add_room_hum
from models.adapters.crema_d import CremaClip, read_clips, voice_valence
from models.dataset_builder import label_transcript, segment_window

log = logging.getLogger(__name__)

DEFAULT_CREMAD_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cremad"
CLIPS_FILE = "clips.csv"
SPEAKER_REFERENCE_CLIPS = 20  # a clip's reference: this many other clips of its actor (~40 s of their speech)
SERVED_WINDOWS = WindowSettings()  # the agent's default utterance windows
WINDOWING = "silero-utterance"  # part of the feature cache's key: whole-clip features live under another key


@dataclass(frozen=True, slots=True)
class VoiceSample:
    """One clip's model inputs and label."""

    clip: CremaClip
    label: float
    text: str
    input_ids: np.ndarray  # int64 [n]
    attention_mask: np.ndarray  # int64 [n]
    token_type_ids: np.ndarray  # int64 [n]
    audio: np.ndarray  # float32 [Ta, 29]
    vision: np.ndarray  # float32 [1, 26]: the "no face" row
    joined: tuple[CremaClip, ...] = ()  # clips spoken after `clip` in this row (joined_voices)
    codec: str | None = None  # None: decoded from the file; else CALL_CODEC or ROOM_HUM (clip_audio_features)

    @property
    def name(self) -> str:
        name = "+".join(c.name for c in (self.clip, *self.joined))
        return name if self.codec is None else f"{name}@{self.codec}"


def load_clips(cremad_dir: Path, *, per_split: int | None = None, seed: int = 0) -> list[CremaClip]:
    """The corpus's clips; `per_split` keeps a seeded sample of that many per split (smoke builds, tests)."""
    clips = read_clips(Path(cremad_dir) / CLIPS_FILE)
    if per_split is None:
        return clips
    rng = np.random.default_rng(seed)
    kept: list[CremaClip] = []
    for split in ("train", "valid", "test"):
        part = [c for c in clips if c.split == split]
        order = sorted(rng.permutation(len(part))[: min(per_split, len(part))])
        kept.extend(part[i] for i in order)
    return kept


def _row(clip: CremaClip) -> LabelRow:
    return LabelRow(line=0, file=clip.file, start_s=0.0, end_s=float("inf"), label=voice_valence(clip),
                    clip_id=clip.name, text=clip.sentence, split=clip.split)


def clip_audio_features(
    clip: CremaClip,
    cremad_dir: Path,
    extractor: FeatureExtractor,
    codec: str | None = None,
    vad: VoiceActivityDetector | None = None,
) -> np.ndarray:
    """The clip's acoustic descriptors, exactly as the agent computes them on the windows it cuts from that
    audio: decoded from the file (`codec` None, a replayed recording), after a call's codec (`CALL_CODEC`, a live
    call), or with a room's hum and noise added (`ROOM_HUM`, default_model/room_hum.py). A clip cut into more
    than one window gives its windows' frames one after another; one in which the detector finds no speech (the
    agent would score nothing) gives the whole clip's."""
    window = segment_window(Path(cremad_dir) / clip.file, _row(clip), extractor.spec.vision_fps)
    if codec == CALL_CODEC:
        window = replace(window, audio=call_codec_round_trip(window.audio))
    elif codec == ROOM_HUM:
        window = replace(window, audio=add_room_hum(window.audio, clip.name))
    elif codec is not None:
        raise ConfigError(f"unknown voice codec {codec!r} (known: {CALL_CODEC}, {ROOM_HUM})")
    served = audio_windows(window.audio, window.stream, SERVED_WINDOWS, vad or SileroVad())
    return np.concatenate([extractor.extract(label_transcript(w, "")).audio for w in served or [window]])


def _cache_dir(cache_root: Path, extractor: FeatureExtractor, codec: str | None) -> Path:
    spec = extractor.spec.to_dict()
    keyed = {k: spec[k] for k in sorted(spec) if k.startswith("audio")}
    keyed["windows"] = {"kind": WINDOWING, **SERVED_WINDOWS.model_dump()}
    if codec == CALL_CODEC:
        keyed["call_codec_revision"] = CALL_CODEC_REVISION
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_root) / (f"audio-{key}" if codec is None else f"audio-{key}-{codec}")


def voice_samples(
    clips: Sequence[CremaClip],
    cremad_dir: Path,
    extractor: FeatureExtractor,
    cache_root: Path,
    *,
    workers: int = 2,
    progress: bool = False,
    codec: str | None = None,
) -> list[VoiceSample]:
    """Model inputs of every clip, in order (audio features cached per clip and codec, see
    `clip_audio_features`); a bad file stops the build."""
    cremad_dir = Path(cremad_dir)
    if not (cremad_dir / CLIPS_FILE).is_file():
        raise ConfigError(f"CREMA-D corpus not found: {cremad_dir / CLIPS_FILE}")
    cache = _cache_dir(cache_root, extractor, codec)
    cache.mkdir(parents=True, exist_ok=True)
    vad = SileroVad()  # one model; each clip's windower works on its own stream state

    def audio_of(clip: CremaClip) -> np.ndarray:
        cached = cache / f"{clip.name}.npy"
        if cached.is_file():
            return np.load(cached)
        audio = clip_audio_features(clip, cremad_dir, extractor, codec, vad)
        partial = cached.with_suffix(".partial.npy")
        np.save(partial, audio)
        partial.replace(cached)
        return audio

    started = time.perf_counter()
    samples: list[VoiceSample] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        audios = pool.map(audio_of, clips)
        bar = progress_bar(audios, desc=f"CREMA-D voices: features ({codec or 'file'})", total=len(clips),
                           unit="clip", enabled=progress)
        for clip, audio in zip(clips, bar, strict=True):
            ids, mask, types = extractor.tokenize(clip.sentence)
            samples.append(VoiceSample(clip, voice_valence(clip), clip.sentence, ids, mask, types, audio,
                                       extractor.vision_features(()), codec=codec))
    log.info("CREMA-D: %d clips' features in %.0f s", len(samples), time.perf_counter() - started)
    return samples



def joined_voices(
    samples: Sequence[VoiceSample],
    extractor: FeatureExtractor,
    *,
    repeat: int,
    fraction: float,
    max_frames: int,
    seed: int,
) -> list[VoiceSample]:
    """Each sample `repeat` times; each copy, with probability `fraction`, followed by 1-3 more clips (drawn with
    replacement) of the same actor and intended emotion, their frame features concatenated (cut at `max_frames`).

    A joined row's label is the mean of its clips' labels and its text their sentences in order. Concatenating
    20 ms frames is the features of the concatenated audio up to the frames at each seam (a 25-40 ms analysis
    window straddles it), which is why no audio is decoded again.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str, str | None], list[VoiceSample]] = {}
    for sample in samples:
        groups.setdefault((sample.clip.actor, sample.clip.emotion, sample.codec), []).append(sample)
    rows: list[VoiceSample] = []
    for sample in samples:
        for _ in range(max(1, repeat)):
            if rng.random() >= fraction:
                rows.append(sample)
                continue
            group = groups[(sample.clip.actor, sample.clip.emotion, sample.codec)]
            others = [group[int(i)] for i in rng.integers(0, len(group), size=int(rng.integers(1, 4)))]
            parts = [sample, *others]
            text = " ".join(p.text for p in parts)
            ids, mask, types = extractor.tokenize(text)
            rows.append(VoiceSample(
                sample.clip, float(np.mean([p.label for p in parts])), text, ids, mask, types,
                np.concatenate([p.audio for p in parts])[:max_frames], sample.vision,
                tuple(p.clip for p in others), sample.codec,
            ))
    return rows


def speaker_centred(
    samples: Sequence[VoiceSample], columns: Sequence[int], *, clips: int = SPEAKER_REFERENCE_CLIPS, seed: int,
    quiet_gate: bool = False,
) -> list[VoiceSample]:
    """Each sample with `columns` taken relative to its actor's voice, as the agent takes a participant's: the
    running reference (core/speaker_reference.py) after `clips` other clips of the same actor through the same
    codec, drawn at random, then the clip itself (a call's earlier speech, then this window)."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str | None], list[VoiceSample]] = {}
    for sample in samples:
        groups.setdefault((sample.clip.actor, sample.codec), []).append(sample)
    out = []
    for sample in samples:
        others = [o for o in groups[(sample.clip.actor, sample.codec)] if o.clip.name != sample.clip.name]
        picked = sorted(rng.choice(len(others), size=min(clips, len(others)), replace=False)) if others else []
        reference = reference_over([*(others[i].audio for i in picked), sample.audio])
        out.append(replace(sample, audio=centred(sample.audio, reference, columns, quiet_gate=quiet_gate)))
    return out
