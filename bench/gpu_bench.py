"""GPU measurements, run on a lent GPU machine by bench/gpu.sh (not by `make bench`; no GPU here).

1. scoring, PyTorch: Self-MM at the default model's shape (all-MiniLM-L6-v2 architecture, MOSI heads, the
   agent's feature dims; random weights: speed does not depend on them), CUDA fp32 vs CUDA fp16 (autocast) vs
   CPU fp32, batch sweep 1…64. Baseline: CPU fp32 in the same run.
2. scoring, ONNX Runtime: the same model exported as the bundle's fp32 graph and its fp16 graph, on every
   provider this onnxruntime build has (CUDA only when onnxruntime-gpu is installed); the providers a session
   really got are recorded (ORT falls back to CPU silently).
3. Whisper tiny.en through CTranslate2 (what faster-whisper runs): CUDA float16 vs CPU int8, N windows of 30 s
   mel features (faster-whisper pads every window to 30 s) decoded one after another vs as one batch (batching
   across streams), a fixed number of tokens per window. The model has tiny.en's exact layout with random
   weights (bench/whisper_layout.py): the device cannot receive the 75 MB model.
4. streams: N streams closing a window at once: per-window latency sequential vs batched (from 1 and 3).

Every section records its error instead of stopping the run. Writes JSON (--out) after every section.

    python3 -m bench.gpu_bench --out $OUT/gpu_bench.json [--whisper-layout FILE] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

MINILM = {  # all-MiniLM-L6-v2's config.json (the default model's text encoder)
    "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
    "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu", "vocab_size": 30522,
    "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
}
AUDIO_DIM, VISION_DIM = 29, 26  # core.audio_columns.AUDIO_DIM, core.features_vision.VISION_DIM
WINDOW_S = 5.0
TEXT_LEN, AUDIO_LEN, VISION_LEN = 50, int(WINDOW_S * 50), int(WINDOW_S * 10)  # tokens, 50 Hz, 10 fps
BATCHES = (1, 2, 4, 8, 16, 32, 64)
WHISPER_WINDOWS = (1, 2, 4, 8, 16)
WHISPER_MAX_LENGTH = 64  # CTranslate2 decodes max_length/2 tokens here: ~32 tokens, a 5-10 s utterance


def timed(fn: Callable[[], Any], *, reps: int, warmup: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall milliseconds of fn() over reps, after warmup calls."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(samples), 3)


def env() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available() and torch.cuda.get_device_name(0)
    except Exception as exc:
        info["torch_error"] = repr(exc)
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except Exception as exc:
        info["onnxruntime_error"] = repr(exc)
    try:
        import ctranslate2

        info["ctranslate2"] = ctranslate2.__version__
        info["ctranslate2_cuda_devices"] = ctranslate2.get_cuda_device_count()
    except Exception as exc:
        info["ctranslate2_error"] = repr(exc)
    return info


def build_model(workdir: Path) -> Any:
    from models.config import SelfMMConfig
    from models.selfmm import SelfMM

    encoder = workdir / "minilm"
    encoder.mkdir(parents=True, exist_ok=True)
    (encoder / "config.json").write_text(json.dumps(MINILM), encoding="utf-8")
    config = SelfMMConfig.preset("mosi", text_encoder_dir=encoder, audio_dim=AUDIO_DIM, vision_dim=VISION_DIM)
    return SelfMM(config, load_text_weights=False).eval()


def feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1000, 20000, size=(batch, TEXT_LEN)).astype(np.int64),
        "attention_mask": np.ones((batch, TEXT_LEN), dtype=np.int64),
        "token_type_ids": np.zeros((batch, TEXT_LEN), dtype=np.int64),
        "audio": rng.normal(size=(batch, AUDIO_LEN, AUDIO_DIM)).astype(np.float32),
        "audio_lengths": np.full(batch, AUDIO_LEN, dtype=np.int64),
        "vision": rng.normal(size=(batch, VISION_LEN, VISION_DIM)).astype(np.float32),
        "vision_lengths": np.full(batch, VISION_LEN, dtype=np.int64),
    }


def scoring_torch(model: Any, batches: tuple[int, ...], reps: int) -> list[dict[str, Any]]:
    import torch

    from exporters.onnx import INPUT_NAMES

    rows = []
    variants = [("cpu", "fp32")]
    if torch.cuda.is_available():
        variants = [("cuda", "fp32"), ("cuda", "fp16"), *variants]
    for device, precision in variants:
        model.to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for batch in batches if device == "cuda" else tuple(b for b in batches if b in (1, 8, 64)):
            args = [torch.from_numpy(feeds(batch)[name]).to(device) for name in INPUT_NAMES]

            run = functools.partial(_forward, model, args, device, precision == "fp16")
            ms = timed(run, reps=reps if device == "cuda" else max(2, reps // 4), warmup=2, sync=sync)
            rows.append({"device": device, "precision": precision, "batch": batch, "ms_per_batch": ms,
                         "windows_per_s": round(batch * 1000.0 / ms, 1)})
            print(rows[-1], flush=True)
    model.to("cpu")
    return _with_ratios(rows, baseline=("cpu", "fp32"))


def scoring_onnx(model: Any, workdir: Path, batches: tuple[int, ...], reps: int) -> dict[str, Any]:
    import onnxruntime as ort

    from exporters.onnx import InferenceGraph, InputCase, export_graph
    from exporters.quantize import convert_fp16

    fp32, fp16 = workdir / "model.onnx", workdir / "model.fp16.onnx"
    export_graph(InferenceGraph(model), InputCase("example", feeds(2)), fp32)
    convert_fp16(fp32, fp16)
    rows, sessions = [], {}
    available = ort.get_available_providers()
    for provider in [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]:
        for precision, path in (("fp32", fp32), ("fp16", fp16)):
            if provider == "CPUExecutionProvider" and precision == "fp16":
                continue  # fp16 is the CUDA graph; on CPU ORT runs it through casts (slower, not deployed)
            session = ort.InferenceSession(str(path), providers=[provider])
            sessions[f"{provider}/{precision}"] = session.get_providers()
            names = [o.name for o in session.get_outputs()]
            cpu = provider == "CPUExecutionProvider"
            for batch in tuple(b for b in batches if b in (1, 8, 64)) if cpu else batches:
                run = functools.partial(session.run, names, feeds(batch))
                ms = timed(run, reps=max(2, reps // 4) if cpu else reps, warmup=2)
                rows.append({"device": provider, "precision": precision, "batch": batch, "ms_per_batch": ms,
                             "windows_per_s": round(batch * 1000.0 / ms, 1)})
                print(rows[-1], flush=True)
    return {"providers_available": available, "session_providers": sessions,
            "rows": _with_ratios(rows, baseline=("CPUExecutionProvider", "fp32"))}


def _forward(model: Any, args: list[Any], device: str, fp16: bool) -> None:
    import torch

    with torch.no_grad(), torch.autocast(device, dtype=torch.float16, enabled=fp16):
        model(*args)


def _with_ratios(rows: list[dict[str, Any]], baseline: tuple[str, str]) -> list[dict[str, Any]]:
    base = {r["batch"]: r["ms_per_batch"] for r in rows if (r["device"], r["precision"]) == baseline}
    for row in rows:
        if row["batch"] in base:
            row["speedup_vs_cpu_fp32"] = round(base[row["batch"]] / row["ms_per_batch"], 2)
    return rows


def whisper(layout_path: Path | None, workdir: Path, windows: tuple[int, ...], reps: int) -> dict[str, Any]:
    import ctranslate2

    from bench.whisper_layout import write_random

    if layout_path is None or not layout_path.is_file():
        raise FileNotFoundError(f"no Whisper layout ({layout_path}): run bench/gpu_prepare.sh here first")
    spec = json.loads(layout_path.read_text(encoding="utf-8"))
    model_dir = write_random(spec, workdir / "whisper-tiny.en-random")
    tokenizer = json.loads(spec["files"]["tokenizer.json"])
    vocab = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    prompt = [vocab["<|startoftranscript|>"], vocab["<|notimestamps|>"]]
    eot = vocab["<|endoftext|>"]
    variants = [("cpu", "int8")]
    if ctranslate2.get_cuda_device_count() > 0:
        variants = [("cuda", "float16"), *variants]
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for device, compute_type in variants:
        try:
            rows += _whisper_rows(model_dir, device, compute_type, prompt, eot, windows, reps)
        except Exception:
            errors[f"{device}/{compute_type}"] = traceback.format_exc(limit=3)
            print(errors[f"{device}/{compute_type}"], file=sys.stderr, flush=True)
    return {"model": "tiny.en layout, random weights", "window_mel_frames": 3000, "rows": rows,
            "errors": errors}


def _whisper_rows(
    model_dir: Path, device: str, compute_type: str, prompt: list[int], eot: int, windows: tuple[int, ...],
    reps: int,
) -> list[dict[str, Any]]:
    import ctranslate2

    model = ctranslate2.models.Whisper(str(model_dir), device=device, compute_type=compute_type)
    rows = []
    for n in windows if device == "cuda" else tuple(w for w in windows if w <= 4):
        mel = np.random.default_rng(n).normal(size=(n, 80, 3000)).astype(np.float32)

        def decode(batch: np.ndarray) -> int:
            encoded = model.encode(ctranslate2.StorageView.from_array(batch))
            out = model.generate(encoded, [prompt] * len(batch), max_length=WHISPER_MAX_LENGTH,
                                 suppress_tokens=[-1, eot], beam_size=1)
            return len(out[0].sequences_ids[0])

        tokens = decode(mel[:1])
        one_ms = timed(functools.partial(decode, mel[:1]), reps=reps if device == "cuda" else 2, warmup=1)
        batch_ms = timed(functools.partial(decode, mel), reps=reps if device == "cuda" else 2, warmup=1)
        rows.append({"device": device, "compute_type": compute_type, "windows": n,
                     "tokens_per_window": tokens,
                     "one_window_ms": one_ms, "sequential_all_ms": round(one_ms * n, 1),
                     "sequential_mean_latency_ms": round(one_ms * (n + 1) / 2, 1),  # window i waits for i-1
                     "batched_all_ms": batch_ms, "batched_speedup": round(one_ms * n / batch_ms, 2)})
        print(rows[-1], flush=True)
    return rows


def streams(results: dict[str, Any]) -> list[dict[str, Any]]:
    """N streams close a window together: speech + scoring latency per window, one-by-one vs batched."""
    speech = {r["windows"]: r for r in results.get("whisper", {}).get("rows", []) if r["device"] == "cuda"}
    scoring = {r["batch"]: r["ms_per_batch"] for r in results.get("scoring_torch", [])
               if (r["device"], r["precision"]) == ("cuda", "fp16")}
    rows = []
    for n in sorted(set(speech) & set(scoring)):
        one = speech[1]["one_window_ms"] + scoring[1]
        rows.append({"streams": n, "sequential_mean_latency_ms": round(one * (n + 1) / 2, 1),
                     "sequential_last_latency_ms": round(one * n, 1),
                     "batched_latency_ms": round(speech[n]["batched_all_ms"] + scoring[n], 1),
                     "derived_from": "whisper cuda float16 + scoring_torch cuda fp16"})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--whisper-layout", type=Path, default=REPO / ".whl" / "gpu" / "whisper_layout.json")
    parser.add_argument("--quick", action="store_true", help="few batches and repetitions (a smoke run)")
    args = parser.parse_args()
    batches = (1, 8) if args.quick else BATCHES
    windows = (1, 2) if args.quick else WHISPER_WINDOWS
    reps = 3 if args.quick else 10
    results: dict[str, Any] = {"env": env(), "shapes": {"text_tokens": TEXT_LEN, "audio_frames": AUDIO_LEN,
                                                         "vision_frames": VISION_LEN, "window_s": WINDOW_S}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = None
        sections: list[tuple[str, Callable[[], Any]]] = [
            ("scoring_torch", lambda: scoring_torch(model, batches, reps)),
            ("scoring_onnx", lambda: scoring_onnx(model, workdir, batches, reps)),
            ("whisper", lambda: whisper(args.whisper_layout, workdir, windows, reps)),
            ("streams", lambda: streams(results)),
        ]
        try:
            model = build_model(workdir)
        except Exception:
            results["model_error"] = traceback.format_exc(limit=3)
            sections = sections[2:]
        for name, run in sections:
            started = time.perf_counter()
            try:
                results[name] = run()
            except Exception:
                results[f"{name}_error"] = traceback.format_exc(limit=4)
                print(results[f"{name}_error"], file=sys.stderr, flush=True)
            results.setdefault("section_s", {})[name] = round(time.perf_counter() - started, 1)
            args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
