"""What a call's codec moves: the same recordings scored decoded from the file and after the call's Opus VOIP.

Each recording (the neutral readings of ../shared/data/manifest.csv, the GRID and CREMA-D talking-face files)
is cut into fixed 5 s windows (the live end-to-end test's windows), transcribed by Whisper and scored by the
bundle twice: from the file's decode, and after `core.call_codec.call_codec_round_trip` (what a live call's
sender does to it). The windows line up, so each one's M and A are compared directly. A model whose audio
head reads the voice moves little; one that reads the pauses' hum moves points (3.0.0: A by up to 3 live).
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.settings import WindowSettings
from agent.speech import SpeechRecognizer
from agent.windows import audio_windows
from core.call_codec import CALL_CODEC, call_codec_round_trip
from core.features import FeatureExtractor
from core.media import decode_audio
from core.speaker_reference import SpeakerReferences
from core.types import StreamId, TaskScore

FIXED_5S = WindowSettings(mode="fixed", length_s=5.0, hop_s=5.0)
TALKING_FACES = (Path("av") / "derived" / "grid_11clips_concat.mp4",
                 Path("av") / "derived" / "crema_d_1001_DFA_6emotions.mp4")


class WindowScorer(Protocol):
    extractor: FeatureExtractor
    speech: SpeechRecognizer
    vad: Any

    async def score_task(self, features: Any) -> TaskScore: ...


def recordings(shared: Path) -> list[Path]:
    with (shared / "manifest.csv").open(newline="") as handle:
        speech = [shared / row["path"] for row in csv.DictReader(handle) if row["kind"] == "speech"]
    return speech + [shared / path for path in TALKING_FACES]


async def window_scores(pipe: WindowScorer, name: str, audio: np.ndarray) -> list[TaskScore]:
    stream = StreamId("codec", name)
    windows = audio_windows(audio, stream, FIXED_5S, pipe.vad)
    references = SpeakerReferences()  # the recording is one participant's call, as the agent's pipeline keeps it
    scores = []
    for window in windows:
        transcript = await asyncio.to_thread(pipe.speech.transcribe, window)
        features = references.attach(stream.key, await asyncio.to_thread(pipe.extractor.extract, transcript))
        scores.append(await pipe.score_task(features))
    return scores


async def codec_shift(pipe: WindowScorer, shared: Path) -> dict[str, Any]:
    """Per recording and overall: mean and max |shift| of M and A between the file's decode and the call's."""
    rows, shifts_m, shifts_a = [], [], []
    for path in recordings(shared):
        audio = decode_audio(path)
        direct = await window_scores(pipe, path.stem, audio)
        called = await window_scores(pipe, path.stem, call_codec_round_trip(audio))
        pairs = list(zip(direct, called, strict=True))  # the round trip keeps the length: same windows
        d_m = [abs(c.m - d.m) for d, c in pairs]
        d_a = [abs(c.a - d.a) for d, c in pairs if c.a is not None and d.a is not None]
        shifts_m += d_m
        shifts_a += d_a
        rows.append({"recording": str(path.relative_to(shared)), "windows": len(pairs),
                     "mean_a_file": _mean([d.a for d, _ in pairs]), "mean_a_call": _mean([c.a for _, c in pairs]),
                     "max_abs_shift_m": round(max(d_m, default=0.0), 3),
                     "max_abs_shift_a": round(max(d_a, default=0.0), 3)})
    return {
        "codec": CALL_CODEC, "windows": FIXED_5S.model_dump(), "recordings": rows,
        "windows_compared": len(shifts_m),
        "mean_abs_shift_m": round(float(np.mean(shifts_m)), 4) if shifts_m else None,
        "max_abs_shift_m": round(float(np.max(shifts_m)), 4) if shifts_m else None,
        "mean_abs_shift_a": round(float(np.mean(shifts_a)), 4) if shifts_a else None,
        "max_abs_shift_a": round(float(np.max(shifts_a)), 4) if shifts_a else None,
    }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 3) if kept else None


def print_codec_shift(result: dict[str, Any]) -> None:
    print(f"\ncall codec ({result['codec']}) vs file decode, fixed 5 s windows, {result['windows_compared']} "
          f"windows: |shift| M mean {result['mean_abs_shift_m']} max {result['max_abs_shift_m']}, "
          f"A mean {result['mean_abs_shift_a']} max {result['max_abs_shift_a']}")
    for row in result["recordings"]:
        print(f"  {row['recording'][-44:]:<44} {row['windows']:>3} windows  A file {row['mean_a_file']} "
              f"call {row['mean_a_call']}  max |dA| {row['max_abs_shift_a']}  max |dM| {row['max_abs_shift_m']}")


def main() -> None:
    import argparse
    import json
    import logging

    from bench._cpu import cpu_info
    from bench.default_model import ROOT, SHARED, Pipeline
    from core.card import DEFAULT_BUNDLE_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / DEFAULT_BUNDLE_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "codec_shift.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    async def run() -> dict[str, Any]:
        pipe = Pipeline(args.bundle)
        pipe.scorer.start()
        try:
            return await codec_shift(pipe, SHARED)
        finally:
            await pipe.scorer.close()

    result = {"bundle": str(args.bundle), "cpu": cpu_info().line(), **asyncio.run(run())}
    print_codec_shift(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
