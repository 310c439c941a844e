"""Recordings + a labels CSV -> an MMSA-format pickle, with exactly the features the agent computes live.

Each labelled segment is decoded with ``core.media.decode_file`` (16 kHz mono float32 audio, RGB frames),
its frames sampled to ``vision_fps`` with the agent's own ``FrameSampler``, wrapped in the agent's ``Window``
and ``Transcript`` types and passed to ``FeatureExtractor.extract`` — the same call the live pipeline makes.

The labels CSV is read by ``core.labels.read_labels`` (columns there; here every row needs its ``split``).
Output: the MMSA pickle of docs/selfmm.md §6 (see ``assemble``) plus ``<out>.json`` with the feature spec,
counts, quality and any skipped rows.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from core.errors import ConfigError, MediaError
from core.features import FeatureExtractor, FeatureSpec
from core.labels import LabelRow, LabelsError, read_labels
from core.media import decode_file
from core.mediatime import sample_frames as sample_media
from core.progress import progress_bar
from core.splits import SPLITS
from core.types import AudioChunk, StreamId, Transcript, VideoFrame, Window
from models.dataset_pickle import Sample, assemble, write_pickle

log = logging.getLogger(__name__)

_STREAM = StreamId("dataset", "builder")


def sample_frames(frames: list[VideoFrame], vision_fps: float) -> tuple[VideoFrame, ...]:
    """The frames live ingest and replay keep (`core.mediatime.sample_frames`: one per 1/fps slot)."""
    return tuple(item for item in sample_media(frames, vision_fps) if isinstance(item, VideoFrame))


def segment_window(path: Path, row: LabelRow, vision_fps: float) -> Window:
    """Decode one labelled segment into the agent's Window (same decoder and frame sampling as live)."""
    chunks: list[AudioChunk] = []
    frames: list[VideoFrame] = []
    end_s = row.end_s if math.isfinite(row.end_s) else None
    for item in decode_file(path, start_s=row.start_s or None, end_s=end_s):
        if isinstance(item, AudioChunk):
            chunks.append(item)
        else:
            frames.append(item)
    if not chunks:
        raise MediaError(str(path), f"no audio in {row.start_s}-{row.end_s} s (labels line {row.line})")
    audio = np.concatenate([c.samples for c in chunks]).astype(np.float32, copy=False)  # float32 [n] 16 kHz
    return Window(
        stream=_STREAM, seq=row.line, start_s=chunks[0].start_s, end_s=chunks[-1].end_s, audio=audio,
        frames=sample_frames(frames, vision_fps), closed_by="stream_end",
    )  # fmt: skip


Transcriber = Callable[[Window], Transcript]


def label_transcript(window: Window, text: str) -> Transcript:
    return Transcript(window=window, text=text, words=(), language="en", no_speech_prob=0.0, latency_ms=0.0)


def extract_rows(
    rows: list[LabelRow],
    recordings: Path,
    extractor: FeatureExtractor,
    *,
    transcriber: Transcriber | None = None,
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> Iterator[Sample]:
    """Features of each labelled segment in CSV order; a failing one stops the build unless skipped."""
    for row in rows:
        try:
            yield _extract_row(row, recordings, extractor, transcriber)
        except (MediaError, LabelsError) as exc:
            if not skip_bad:
                raise
            log.warning("labels line %d skipped: %s", row.line, exc)
            if skipped is not None:
                skipped.append(f"line {row.line}: {exc}")


def _extract_row(
    row: LabelRow, recordings: Path, extractor: FeatureExtractor, transcriber: Transcriber | None
) -> Sample:
    window = segment_window(recordings / row.file, row, extractor.spec.vision_fps)
    if row.text is not None:
        transcript = label_transcript(window, row.text)
    elif transcriber is not None:
        transcript = transcriber(window)
    else:
        raise LabelsError(f"labels line {row.line}: no text; give a text column or use Whisper (--whisper)")
    features = extractor.extract(transcript)
    return Sample(
        row=row, raw_text=transcript.text, input_ids=features.input_ids, audio=features.audio,
        vision=features.vision, speech_ratio=features.speech_ratio,
        face_visible_ratio=features.face_visible_ratio,
    )  # fmt: skip


def text_hidden_size(text_encoder: Path) -> int:
    """hidden_size from the text encoder's config.json (the width of the placeholder ``text`` array)."""

    config = Path(text_encoder) / "config.json"
    if not config.is_file():
        raise ConfigError(f"no config.json in text encoder directory {text_encoder}")
    hidden = json.loads(config.read_text(encoding="utf-8")).get("hidden_size")
    if not isinstance(hidden, int) or hidden < 1:
        raise ConfigError(f"{config}: hidden_size missing or invalid")
    return hidden


def feature_spec_for(text_encoder: Path, *, text_max_length: int, vision_fps: float) -> FeatureSpec:
    return FeatureSpec.for_tokenizer(text_encoder, text_max_length=text_max_length, vision_fps=vision_fps)


def _summary(samples: list[Sample], spec: FeatureSpec, skipped: list[str], transcripts: str) -> dict:
    splits = {}
    for name in SPLITS:
        part = [s for s in samples if s.row.split == name]
        splits[name] = {
            "count": len(part),
            "mean_speech_ratio": float(np.mean([s.speech_ratio for s in part])) if part else None,
            "mean_face_visible_ratio": float(np.mean([s.face_visible_ratio for s in part])) if part else None,
        }
    return {"feature_spec": spec.to_dict(), "transcripts": transcripts, "splits": splits, "skipped": skipped}


def build_dataset(
    recordings: Path,
    labels: Path,
    text_encoder: Path,
    out: Path,
    *,
    vision_fps: float,
    text_max_length: int = 50,
    transcriber: Transcriber | None = None,
    skip_bad: bool = False,
    compact_text: bool = False,
    max_audio_frames: int | None = None,
    max_vision_frames: int | None = None,
    progress: bool = False,
) -> dict:
    """Build ``out`` (pickle) and ``out.json`` (spec and counts); returns the summary written to the JSON.

    ``progress``: a bar over the segments on stderr (``core.progress``).
    """

    if not recordings.is_dir():
        raise ConfigError(f"recordings directory not found: {recordings}")
    rows = read_labels(labels, with_split=True)
    spec = feature_spec_for(text_encoder, text_max_length=text_max_length, vision_fps=vision_fps)
    width = 1 if compact_text else text_hidden_size(text_encoder)
    extractor = FeatureExtractor(spec, text_encoder)
    skipped: list[str] = []
    samples: list[Sample] = []
    bar = progress_bar(desc="features", total=len(rows), unit="segment", enabled=progress)
    try:
        for sample in extract_rows(
            rows, recordings, extractor, transcriber=transcriber, skip_bad=skip_bad, skipped=skipped
        ):
            samples.append(sample)
            bar.update(len(samples) + len(skipped) - bar.n)
        bar.update(len(rows) - bar.n)  # skipped rows after the last sample
    finally:
        bar.close()
        extractor.close()
    if not samples:
        raise LabelsError(f"{labels}: no segment could be used ({len(skipped)} skipped)")
    data = assemble(samples, spec, text_width=width, audio_cap=max_audio_frames, vision_cap=max_vision_frames)
    write_pickle(data, out)
    summary = _summary(samples, spec, skipped, "whisper" if transcriber is not None else "labels")
    Path(str(out) + ".json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log.info("wrote %s: %d segments (%d skipped)", out, len(samples), len(skipped))
    return summary
