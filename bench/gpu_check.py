"""GPU check: the fp32 and fp16 graphs on ONNX Runtime's CUDA provider vs CPU, and throughput at batch 1..64.

Installs nothing. Needs onnxruntime with the CUDA provider (the `onnxruntime-gpu` package) and a GPU; exits
with a message saying what is missing otherwise. Graphs come from a bundle (`--bundle DIR`, as written by
`affectstream export`), or, with `--random-minilm`, from a Self-MM with MiniLM's shape and random weights
exported here (needs torch + transformers + onnx: speed and CUDA/CPU agreement do not depend on training).

    python -m bench.gpu_check --bundle BUNDLE          # or: --random-minilm
Writes bench/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gpu_check.json"
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
BATCHES = (1, 2, 4, 8, 16, 32, 64)
MINILM = dict(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
)


def require_cuda() -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit("gpu_check: onnxruntime is not installed")
    if CUDA not in ort.get_available_providers():
        sys.exit(
            f"gpu_check: this onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
            "(pip install --force-reinstall --no-deps onnxruntime-gpu) on a machine with CUDA"
        )


def graphs_from_bundle(bundle: Path) -> tuple[Path, Path, int, int, int]:
    from agent.bundle import verify_graph
    from core.card import ModelCard

    card = ModelCard.read(bundle)
    fp16 = card.variant("fp16")
    if fp16 is None:
        sys.exit(f"gpu_check: {bundle} has no fp16 graph: export it without --no-fp16")
    fp32_path, fp16_path = verify_graph(bundle, card.graph), verify_graph(bundle, fp16.graph)
    dims = int(card.input_info("audio").shape[-1]), int(card.input_info("vision").shape[-1])
    return fp32_path, fp16_path, *dims, card.text_vocab_size


def graphs_from_random_minilm(work: Path) -> tuple[Path, Path, int, int, int]:
    import torch
    from transformers import BertConfig

    from exporters.cases import random_cases
    from exporters.onnx import InferenceGraph, export_graph, validate_graph
    from exporters.quantize import convert_fp16
    from models.config import SelfMMConfig
    from models.selfmm import SelfMM

    BertConfig(**MINILM).save_pretrained(str(work / "encoder"))
    torch.manual_seed(0)
    config = SelfMMConfig.preset("mosi", text_encoder_dir=work / "encoder", audio_dim=29, vision_dim=26)
    graph = InferenceGraph(SelfMM(config, load_text_weights=False).eval())
    cases = random_cases(audio_dim=29, vision_dim=26, vocab_size=MINILM["vocab_size"], text_max_length=50)
    export_graph(graph, cases[2], work / "model.onnx")
    validate_graph(work / "model.onnx", graph, cases)
    convert_fp16(work / "model.onnx", work / "model.fp16.onnx")
    return work / "model.onnx", work / "model.fp16.onnx", 29, 26, MINILM["vocab_size"]


def feeds_for(batch: int, audio_dim: int, vision_dim: int, vocab_size: int, seed: int = 0) -> dict:
    """A padded batch like live windows: 8..48 tokens, 50..400 audio frames, 10..80 vision frames."""
    rng = np.random.default_rng(seed + batch)
    text, audio, vision = (
        rng.integers(8, 49, batch),
        rng.integers(50, 401, batch),
        rng.integers(10, 81, batch),
    )
    feeds = {"input_ids": np.zeros((batch, text.max()), np.int64)}
    feeds["attention_mask"] = np.zeros_like(feeds["input_ids"])
    for row, n in enumerate(text):
        feeds["input_ids"][row, :n] = rng.integers(1000, vocab_size, n)
        feeds["attention_mask"][row, :n] = 1
    feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    feeds["audio"] = rng.standard_normal((batch, audio.max(), audio_dim)).astype(np.float32)
    feeds["audio_lengths"] = audio.astype(np.int64)
    feeds["vision"] = rng.standard_normal((batch, vision.max(), vision_dim)).astype(np.float32)
    feeds["vision_lengths"] = vision.astype(np.int64)
    return feeds


def session(path: Path, provider: str):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = [provider] if provider == CPU else [provider, CPU]
    s = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if s.get_providers()[0] != provider:
        sys.exit(
            f"gpu_check: {path.name} did not start on {provider} (got {s.get_providers()}): "
            "CUDA/cuDNN libraries missing or not matching this onnxruntime-gpu"
        )
    return s


def timed(s, feeds: dict, repeats: int) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
    out = s.run(["M"], feeds)[0].reshape(-1)  # warm-up (CUDA kernels, allocator)
    s.run(["M"], feeds)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        s.run(["M"], feeds)
        times.append(time.perf_counter() - started)
    return out, float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path)
    source.add_argument("--random-minilm", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cpu-max-batch", type=int, default=16, help="CPU reference timing up to this batch")
    parser.add_argument(
        "--dry-run-cpu",
        action="store_true",
        help="check this script on a machine without CUDA: the CPU provider stands in for CUDA",
    )
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args()
    global CUDA
    if args.dry_run_cpu:
        CUDA = CPU
    else:
        require_cuda()
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            fp32, fp16, audio_dim, vision_dim, vocab = graphs_from_bundle(args.bundle)
        else:
            fp32, fp16, audio_dim, vision_dim, vocab = graphs_from_random_minilm(Path(tmp))
        sessions = {
            "cpu_fp32": session(fp32, CPU),
            "cuda_fp32": session(fp32, CUDA),
            "cuda_fp16": session(fp16, CUDA),
        }
        rows = []
        print(
            f"{'batch':>5}{'CPU fp32 w/s':>14}{'CUDA fp32 w/s':>15}{'CUDA fp16 w/s':>15}"
            f"{'|fp32 CUDA-CPU|':>17}{'|fp16 CUDA-CPU|':>17}"
        )
        for batch in (b for b in BATCHES if b <= args.max_batch):
            feeds = feeds_for(batch, audio_dim, vision_dim, vocab)
            cpu_m = sessions["cpu_fp32"].run(["M"], feeds)[0].reshape(-1)
            cpu_s = timed(sessions["cpu_fp32"], feeds, 3)[1] if batch <= args.cpu_max_batch else 0.0
            m32, s32 = timed(sessions["cuda_fp32"], feeds, args.repeats)
            m16, s16 = timed(sessions["cuda_fp16"], feeds, args.repeats)
            row = {
                "batch": batch,
                "cpu_fp32_windows_per_s": batch / cpu_s if cpu_s else None,
                "cuda_fp32_windows_per_s": batch / s32,
                "cuda_fp16_windows_per_s": batch / s16,
                "max_abs_diff_fp32_cuda_vs_cpu": float(np.abs(m32 - cpu_m).max()),
                "max_abs_diff_fp16_cuda_vs_cpu": float(np.abs(m16 - cpu_m).max()),
            }
            rows.append(row)
            cpu_text = f"{row['cpu_fp32_windows_per_s']:.1f}" if cpu_s else "-"
            print(
                f"{batch:>5}{cpu_text:>14}{row['cuda_fp32_windows_per_s']:>15.1f}"
                f"{row['cuda_fp16_windows_per_s']:>15.1f}{row['max_abs_diff_fp32_cuda_vs_cpu']:>17.2e}"
                f"{row['max_abs_diff_fp16_cuda_vs_cpu']:>17.2e}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(args.bundle or "random-minilm"), "dry_run_cpu": args.dry_run_cpu, "rows": rows}
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
