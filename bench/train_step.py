"""Training-step benchmark: our SelfMM vs MMSA 2.2.1's own SELF_MM (AMIO) on the same batch, on CPU.

A step = forward in train mode + the multi-task L1 loss + backward + Adam step over MMSA's five groups, with
identical weights and inputs for both models. Measurements alternate between the two models (ABAB...) so a
busy machine slows both alike. Rows: a tiny random BERT (the LSTM subnets and heads dominate) and
all-MiniLM-L6-v2 (the encoder dominates), MOSI dims, audio/vision lengths drawn in [T/2, T].
Our LSTMs run over the padded batch and gather the last valid step (exportable); MMSA packs the sequences.
Prints a table and writes bench/results/train_step.json.

    .venv/bin/python -m bench.train_step [--batch 16] [--steps 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models.config import SelfMMConfig, default_text_encoder_dir
from models.errors import ModelConfigError
from models.selfmm import SelfMM
from models.synthetic import write_tiny_bert
from models.train import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def mmsa_model(config: SelfMMConfig) -> torch.nn.Module:
    from easydict import EasyDict
    from MMSA.models.AMIO import AMIO

    args = EasyDict(model_name="self_mm", need_model_aligned=False, need_data_aligned=False,
                    pretrained=config.text_encoder_dir,
                    feature_dims=[config.text_out, config.audio_dim, config.vision_dim])
    for key, value in config.to_dict().items():
        args.setdefault(key, value)
    return AMIO(args)


def make_batch(config: SelfMMConfig, batch: int, text_len: int, t_a: int, t_v: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(text_len // 2, text_len + 1, (batch,), generator=g)
    mask = (torch.arange(text_len)[None] < lengths[:, None]).long()
    return {
        "input_ids": torch.randint(1000 % vocab, vocab, (batch, text_len), generator=g) * mask,
        "attention_mask": mask, "token_type_ids": torch.zeros_like(mask),
        "audio": torch.randn(batch, t_a, config.audio_dim, generator=g),
        "audio_lengths": torch.randint(t_a // 2, t_a + 1, (batch,), generator=g),
        "vision": torch.randn(batch, t_v, config.vision_dim, generator=g),
        "vision_lengths": torch.randint(t_v // 2, t_v + 1, (batch,), generator=g),
        "label": torch.empty(batch).uniform_(-3, 3, generator=g),
    }


def ours_step(model: SelfMM, optimizer: torch.optim.Optimizer, b: dict) -> None:
    optimizer.zero_grad()
    out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["audio"], b["audio_lengths"],
                b["vision"], b["vision_lengths"])
    loss = torch.stack([torch.mean(torch.abs(out[k].view(-1) - b["label"])) for k in "MTAV"]).sum()
    loss.backward()
    optimizer.step()


def mmsa_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, b: dict) -> None:
    optimizer.zero_grad()
    text = torch.stack([b["input_ids"], b["attention_mask"], b["token_type_ids"]], 1).float()
    out = model(text, (b["audio"], b["audio_lengths"]), (b["vision"], b["vision_lengths"]))
    loss = torch.stack([torch.mean(torch.abs(out[k].view(-1) - b["label"])) for k in "MTAV"]).sum()
    loss.backward()
    optimizer.step()


def measure(encoder_dir: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    config = SelfMMConfig.preset("mosi", text_encoder_dir=encoder_dir)
    vocab = json.loads((encoder_dir / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    reference = mmsa_model(config).train()
    ours = SelfMM(config, load_text_weights=False).train()
    ours.load_state_dict({k.removeprefix("Model."): v for k, v in reference.state_dict().items()})
    opt_ours, opt_ref = build_optimizer(ours, config), build_optimizer(reference.Model, config)  # type: ignore[arg-type]
    batch = make_batch(config, args.batch, args.text_len, args.audio_len, args.vision_len, vocab)
    for _ in range(2):  # warm-up
        ours_step(ours, opt_ours, batch)
        mmsa_step(reference, opt_ref, batch)
    times: dict[str, list[float]] = {"ours": [], "mmsa": []}
    for _ in range(args.steps):
        for label, fn in (("ours", lambda: ours_step(ours, opt_ours, batch)),
                          ("mmsa", lambda: mmsa_step(reference, opt_ref, batch))):
            started = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - started)
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}  # median step: robust to noise
    return {"encoder": name, "ours_samples_per_s": round(rate["ours"], 2),
            "mmsa_samples_per_s": round(rate["mmsa"], 2),
            "ratio_ours_over_mmsa": round(rate["ours"] / rate["mmsa"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text-len", type=int, default=50)
    parser.add_argument("--audio-len", type=int, default=100)
    parser.add_argument("--vision-len", type=int, default=75)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_bert(Path(tmp) / "tiny", vocab_size=1000)
        try:
            minilm, minilm_name = default_text_encoder_dir(), "all-MiniLM-L6-v2"
        except ModelConfigError:  # same architecture, random weights: the compute is identical
            minilm = write_tiny_bert(Path(tmp) / "minilm", hidden_size=384, num_layers=6, num_heads=12,
                                     intermediate_size=1536, max_positions=512)
            minilm_name = "MiniLM-L6 shape (random)"
        rows = [measure(tiny, "tiny random BERT (2x32)", args), measure(minilm, minilm_name, args)]
    print(f"CPU, {args.threads} threads, batch {args.batch}, median of {args.steps} steps each")
    print(f"{'encoder':<26} {'ours samples/s':>15} {'MMSA samples/s':>15} {'ratio':>7}")
    for r in rows:
        print(f"{r['encoder']:<26} {r['ours_samples_per_s']:>15.1f} {r['mmsa_samples_per_s']:>15.1f} "
              f"{r['ratio_ours_over_mmsa']:>7.3f}")
    out = REPO / "bench" / "results" / "train_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "train_step", "device": "cpu", "cpu_count": os.cpu_count(), "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps, "text_len": args.text_len, "audio_len": args.audio_len,
        "vision_len": args.vision_len, "torch": torch.__version__, "machine": platform.machine(),
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
