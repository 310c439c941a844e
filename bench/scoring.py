"""Scoring benchmark: micro-batched vs one-at-a-time windows/s, batching's added latency, ORT vs torch eager.

A Self-MM on the real text encoder (all-MiniLM-L6-v2, random heads: speed does not depend on training) is
exported to a bundle with the agent's real feature dims; windows carry real sentences and utterance-sized
audio (50 frames/s) and vision (10 frames/s). The same model is also exported with MMSA's padded text
encoder (no packing) to show what packing gains. Every ratio compares runs made here, in this process, round
by round (the median of same-round ratios).

    .venv/bin/python -m bench.scoring [--streams 32] [--windows-per-stream 8] [--rounds 5]
Writes bench/results/scoring.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from agent.bundle import ModelBundle
from agent.scoring import Scorer, pad_batch
from agent.settings import ScoringSettings
from core.types import Features, StreamId, Transcript, Window
from exporters.cases import REAL_SENTENCES

RESULTS = Path(__file__).resolve().parent / "results" / "scoring.json"


def build_bundle(work: Path, *, pack_text: bool = True) -> tuple[Path, dict, object]:
    """Export MiniLM Self-MM (agent feature dims) to a bundle; returns (bundle, feature spec, torch model).
    pack_text=False: the padded text encoder (MMSA's graph), for comparison."""
    import torch

    from core.card import TaskInfo
    from core.features import FeatureSpec
    from exporters.bundle import ExportRequest, export_bundle
    from models.config import SelfMMConfig, default_text_encoder_dir
    from models.selfmm import SelfMM

    encoder = default_text_encoder_dir()
    spec = FeatureSpec.for_tokenizer(encoder)
    torch.manual_seed(0)
    config = SelfMMConfig.preset("mosi", text_encoder_dir=encoder, audio_dim=spec.audio_dim, vision_dim=spec.vision_dim)
    model = SelfMM(config).eval()
    request = ExportRequest(
        out_dir=work / ("bundle" if pack_text else "bundle-padded"),
        model_id="bench-minilm",
        model_version="0",
        task=TaskInfo("sentiment", -3, 3),
        feature_spec=spec.to_dict(),
        feature_source="live",
        text_encoder_dir=encoder,
        text_max_length=spec.text_max_length,
        audio_dim=spec.audio_dim,
        vision_dim=spec.vision_dim,
        training={"data": "none: random heads, for timing only"},
        fp16=False,
        int8=pack_text,
        pack_text=pack_text,
    )
    export_bundle(model, request)
    return request.out_dir, spec.to_dict(), model


def make_windows(
    n: int, audio_dim: int, vision_dim: int, tokenizer_dir: Path, seed: int = 0, *, duration_follows_words: bool = False
) -> list[Features]:
    """Utterance-like windows: 1-8 s, real sentences, audio at 50 frames/s and vision at 10 frames/s.

    By default a window's duration is drawn independently of its sentence (the harder case for batching);
    with `duration_follows_words` it is the sentence spoken at 2-3 words/s, as an utterance window's is."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.enable_truncation(50)
    tokenizer.no_padding()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sentence = REAL_SENTENCES[i % len(REAL_SENTENCES)]
        duration_s = float(rng.uniform(1.0, 8.0))
        if duration_follows_words:
            duration_s = float(np.clip(len(sentence.split()) / rng.uniform(2.0, 3.0), 1.0, 8.0))
        ids = np.asarray(tokenizer.encode(sentence).ids, np.int64)
        window = Window(StreamId("bench", f"p{i % 64}"), i, 0.0, duration_s, np.zeros(1, np.float32), (), "utterance")
        out.append(
            Features(
                transcript=Transcript(window, "", (), "en", 0.0, 0.0),
                input_ids=ids,
                attention_mask=np.ones_like(ids),
                token_type_ids=np.zeros_like(ids),
                audio=rng.standard_normal((int(duration_s * 50), audio_dim)).astype(np.float32),
                vision=rng.standard_normal((max(1, int(duration_s * 10)), vision_dim)).astype(np.float32),
                speech_ratio=1.0,
                face_visible_ratio=1.0,
                latency_ms=0.0,
            )
        )
    return out


async def closed_loop(bundle: ModelBundle, streams: list[list[Features]], settings: ScoringSettings) -> dict:
    """Every stream sends its next window as soon as the previous one is scored (saturating load)."""
    scorer = Scorer([bundle], settings)
    scorer.start()
    latencies_ms: list[float] = []

    async def stream(items: list[Features]) -> None:
        for features in items:
            started = time.perf_counter()
            await scorer.score(features)
            latencies_ms.append((time.perf_counter() - started) * 1000)

    started_s = time.perf_counter()
    await asyncio.gather(*(stream(items) for items in streams))
    elapsed_s = time.perf_counter() - started_s
    await scorer.close()
    sizes = [s.batch_size for s in scorer.stats]
    return {
        "windows": len(latencies_ms),
        "seconds": elapsed_s,
        "windows_per_s": len(latencies_ms) / elapsed_s,
        "mean_batch": statistics.fmean(sizes),
        "mean_runs_per_batch": statistics.fmean(s.runs for s in scorer.stats),
        "latency_ms": percentiles(latencies_ms),
    }


async def paced(bundle: ModelBundle, windows: list[Features], rate_hz: float, settings: ScoringSettings) -> dict:
    """Open loop: windows arrive at `rate_hz` in total (random phase per stream), as live calls would send."""
    scorer = Scorer([bundle], settings)
    scorer.start()
    latencies_ms: list[float] = []
    rng = np.random.default_rng(1)
    offsets_s = np.sort(rng.uniform(0, len(windows) / rate_hz, len(windows)))
    origin = time.perf_counter()

    async def one(features: Features, at_s: float) -> None:
        await asyncio.sleep(max(0.0, origin + at_s - time.perf_counter()))
        started = time.perf_counter()
        await scorer.score(features)
        latencies_ms.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(one(f, t) for f, t in zip(windows, offsets_s, strict=True)))
    await scorer.close()
    waits = [w for s in scorer.stats for w in s.queue_waits_ms]
    return {
        "rate_hz": rate_hz,
        "latency_ms": percentiles(latencies_ms),
        "batch_wait_ms": percentiles(waits),
        "mean_batch": statistics.fmean(s.batch_size for s in scorer.stats),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {"p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95))}


def eager_vs_ort(bundle: ModelBundle, model: object, windows: list[Features], int8: ModelBundle | None) -> dict:
    """Median latency of one forward at batch 1 and 16: torch eager vs ONNX Runtime (fp32, int8)."""
    import torch

    from exporters.onnx import INPUT_NAMES

    rows = {}
    for batch in (1, 16):
        feeds = pad_batch([bundle.prepare(f) for f in windows[:batch]])
        tensors = [torch.from_numpy(feeds[name]) for name in INPUT_NAMES]

        def run_torch(tensors: list = tensors) -> None:
            with torch.no_grad():
                model(*tensors)  # type: ignore[operator]

        row = {
            "torch_eager_ms": _median_ms(run_torch),
            "ort_fp32_ms": _median_ms(lambda f=feeds: bundle.run(f)),
        }
        if int8 is not None:
            row["ort_int8_ms"] = _median_ms(lambda f=feeds: int8.run(f))
        row["torch_over_ort"] = row["torch_eager_ms"] / row["ort_fp32_ms"]
        rows[f"batch_{batch}"] = row
    return rows


def _median_ms(fn, repeats: int = 15) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


Mode = tuple[ModelBundle, ScoringSettings]


def interleaved(streams: list[list[Features]], modes: dict[str, Mode], rounds: int) -> dict[str, dict]:
    """Closed-loop runs of every mode, interleaved round by round (the CPU is shared: load drifts).
    Each mode reports its median round, every round's windows/s, and `ratio_vs_unbatched`: the median over
    rounds of its windows/s over the unbatched mode's in the same round (drift cancels within a round)."""
    runs: dict[str, list[dict]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, (bundle, settings) in modes.items():
            runs[name].append(asyncio.run(closed_loop(bundle, streams, settings)))
    baseline = [r["windows_per_s"] for r in runs["unbatched"]]
    out = {}
    for name, results in runs.items():
        ordered = sorted(results, key=lambda r: r["windows_per_s"])
        per_round = [r["windows_per_s"] / b for r, b in zip(results, baseline, strict=True)]
        out[name] = dict(
            ordered[len(ordered) // 2],
            rounds_windows_per_s=[r["windows_per_s"] for r in results],
            ratio_vs_unbatched=statistics.median(per_round),
            rounds_ratio_vs_unbatched=per_round,
        )
    return out


def _run_ms(bundle: ModelBundle, feeds: dict) -> float:
    return _median_ms(lambda: bundle.run(feeds), 5)


def part_costs(bundle: ModelBundle, windows: list[Features], batch: int) -> dict[str, float]:
    """ms per window at batch 1 vs `batch`: text alone (1 frame each); the same with every text replaced by
    the median-length one (no padding: the ceiling of batching's gain on this workload); audio+vision alone
    (2 tokens)."""
    out = {}
    for part in ("text", "text_equal_length", "audio_vision"):
        items = [bundle.prepare(f) for f in windows[:batch]]
        if part.startswith("text"):
            items = [replace(i, audio=i.audio[:1], vision=i.vision[:1]) for i in items]
        if part == "text_equal_length":
            median = sorted(items, key=lambda i: len(i.input_ids))[len(items) // 2]
            items = [replace(i, input_ids=median.input_ids, attention_mask=median.attention_mask,
                             token_type_ids=median.token_type_ids) for i in items]
        if part == "audio_vision":
            items = [
                replace(
                    i,
                    input_ids=i.input_ids[[0, -1]],
                    attention_mask=i.attention_mask[:2],
                    token_type_ids=i.token_type_ids[:2],
                )
                for i in items
            ]
        single = statistics.fmean(_run_ms(bundle, pad_batch([i])) for i in items[:8])
        batched = _run_ms(bundle, pad_batch(items)) / len(items)
        out[f"{part}_ms_per_window_b1"], out[f"{part}_ms_per_window_b{batch}"] = single, batched
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--windows-per-stream", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--spinning", action="store_true", help="let idle ORT threads busy-wait (ORT's default)")
    parser.add_argument("--rounds", type=int, default=5, help="closed-loop rounds per mode, interleaved")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    batched = ScoringSettings(max_batch=args.streams, max_wait_ms=0)
    with tempfile.TemporaryDirectory() as tmp:
        path, spec, model = build_bundle(Path(tmp))
        padded_path, _, _ = build_bundle(Path(tmp), pack_text=False)
        threads = dict(intra_op_threads=2, intra_op_spinning=args.spinning)
        bundle = ModelBundle.load(path, spec, **threads)
        padded = ModelBundle.load(padded_path, spec, **threads)
        int8 = ModelBundle.load(path, spec, variant="int8", **threads)
        modes: dict[str, Mode] = {
            "unbatched": (bundle, ScoringSettings(max_batch=1, max_wait_ms=0)),
            f"batched_wait_{args.max_wait_ms:g}ms": (
                bundle, ScoringSettings(max_batch=args.streams, max_wait_ms=args.max_wait_ms)
            ),
            "batched_wait_0ms": (bundle, batched),
            # the same model exported with MMSA's padded text encoder: what packing gains
            "padded_graph_unbatched": (padded, ScoringSettings(max_batch=1, max_wait_ms=0)),
            "padded_graph_length_runs": (padded, batched.model_copy(update={"split_cost_tokens": 32})),
            "padded_graph_one_run": (padded, batched.model_copy(update={"split_cost_tokens": 0})),
        }
        n = args.streams * args.windows_per_stream
        windows = make_windows(n, spec["audio_dim"], spec["vision_dim"], path)
        streams = [windows[i :: args.streams] for i in range(args.streams)]
        load_before = os.getloadavg()[0]
        closed = interleaved(streams, modes, args.rounds)
        spoken = make_windows(n, spec["audio_dim"], spec["vision_dim"], path, duration_follows_words=True)
        closed_spoken = interleaved([spoken[i :: args.streams] for i in range(args.streams)], modes, args.rounds)
        rate_hz = 0.5 * closed["unbatched"]["windows_per_s"]  # a load the unbatched scorer sustains
        paced_modes = dict(list(modes.items())[:3])  # the packed graph's modes
        paced_runs = {name: asyncio.run(paced(b, windows, rate_hz, s)) for name, (b, s) in paced_modes.items()}
        base = paced_runs["unbatched"]["latency_ms"]
        result = {
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m_before": load_before,
                "load_avg_1m_after": os.getloadavg()[0],
                "python": platform.python_version(),
                "provider": bundle.providers[0],
                "intra_op_threads": 2,
                "intra_op_spinning": args.spinning,
            },
            "workload": {
                "streams": args.streams,
                "windows": n,
                "text": "real sentences, <= 50 tokens",
                "window_s": [1, 8],
                "audio_frames_per_s": 50,
                "vision_frames_per_s": 10,
            },
            "closed_loop": closed,
            "throughput_ratio_vs_unbatched": {k: v["ratio_vs_unbatched"] for k, v in closed.items()},
            "closed_loop_duration_follows_words": closed_spoken,
            "throughput_ratio_vs_unbatched_duration_follows_words": {
                k: v["ratio_vs_unbatched"] for k, v in closed_spoken.items()
            },
            "paced": paced_runs,
            "added_latency_ms": {
                k: {q: v["latency_ms"][q] - base[q] for q in ("p50", "p95")} for k, v in paced_runs.items()
            },
            "part_costs": part_costs(bundle, windows, args.streams),
            "eager_vs_ort": eager_vs_ort(bundle, model, windows, int8),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


def print_table(r: dict) -> None:
    m, w = r["machine"], r["workload"]
    print(
        f"CPU x{m['cpus']} (load {m['load_avg_1m_before']:.1f} -> {m['load_avg_1m_after']:.1f}), "
        f"{w['streams']} streams, {w['windows']} windows, {m['provider']}"
    )
    print(f"{'closed loop':<24}{'windows/s':>10}{'x unbatched':>13}{'mean batch':>12}{'runs':>6}{'p50 ms':>9}"
          f"{'p95 ms':>9}")
    for workload, suffix in (("duration drawn apart from the words", ""),
                             ("duration follows the words", "_duration_follows_words")):
        print(f"  windows: {workload}")
        for name, row in r["closed_loop" + suffix].items():
            ratio = r["throughput_ratio_vs_unbatched" + suffix][name]
            print(
                f"{name:<24}{row['windows_per_s']:>10.1f}{ratio:>12.2f}x{row['mean_batch']:>12.1f}"
                f"{row['mean_runs_per_batch']:>6.1f}{row['latency_ms']['p50']:>9.1f}{row['latency_ms']['p95']:>9.1f}"
            )
    rate = r["paced"]["unbatched"]["rate_hz"]
    print(
        f"paced at {rate:.1f} windows/s{'':<6}{'p50 ms':>9}{'p95 ms':>9}{'added p50':>11}{'added p95':>11}"
        f"{'batch wait p50/p95':>20}"
    )
    for name, row in r["paced"].items():
        added, wait = r["added_latency_ms"][name], row["batch_wait_ms"]
        print(
            f"{name:<24}{'':>10}{row['latency_ms']['p50']:>9.1f}{row['latency_ms']['p95']:>9.1f}"
            f"{added['p50']:>+11.1f}{added['p95']:>+11.1f}{wait['p50']:>12.1f} / {wait['p95']:.1f}"
        )
    print("ms per window by part: " + ", ".join(f"{k} {v:.2f}" for k, v in r["part_costs"].items()))
    print(f"{'one forward':<14}{'torch ms':>10}{'ORT fp32 ms':>13}{'ORT int8 ms':>13}{'torch/ORT':>11}")
    for key, row in r["eager_vs_ort"].items():
        print(
            f"{key:<14}{row['torch_eager_ms']:>10.1f}{row['ort_fp32_ms']:>13.1f}"
            f"{row.get('ort_int8_ms', float('nan')):>13.1f}{row['torch_over_ort']:>10.2f}x"
        )


if __name__ == "__main__":
    main()
