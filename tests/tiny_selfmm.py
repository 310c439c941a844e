"""Test support: a tiny random BERT directory and small Self-MM bundles exported from it (fast on CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = (
    "i have been sleeping badly for the last two weeks and feel tired all time honestly things are going "
    "much better since we changed medication don ' t know it was a really good day went to park with kids "
    "had picnic nothing helps can concentrate at work anymore everything feels pointless okay thank you "
    "doctor see next week hi . , !"
).split()
AUDIO_DIM = 5  # the MOSI preset's dims keep the heads small
VISION_DIM = 20


def make_tiny_encoder(directory: Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random 2-layer BERT saved like a hub checkpoint, with tokenizer.json, vocab.txt and config."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS)]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(str(directory))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(directory))
    return directory


def make_tiny_model(
    encoder_dir: Path, *, seed: int = 0, task: str = "sentiment", config: dict[str, Any] | None = None
) -> Any:
    """A randomly initialised Self-MM (MOSI preset dims, `config` overrides) on the tiny encoder, in eval mode."""
    import torch

    from models.config import SelfMMConfig
    from models.selfmm import SelfMM

    torch.manual_seed(seed)
    model_config = SelfMMConfig.preset("mosi", text_encoder_dir=encoder_dir, task=task, **(config or {}))
    return SelfMM(model_config).eval()


def export_tiny_bundle(
    encoder_dir: Path, out_dir: Path, *, seed: int = 0, task: str = "sentiment",
    config: dict[str, Any] | None = None, **request: Any,
) -> Path:
    """Export + validate a tiny model into a bundle (fp16 and int8 off unless asked: they cost time)."""
    from core.card import TaskInfo
    from exporters.bundle import ExportRequest, export_bundle
    from models.tasks import make_task

    model = make_tiny_model(encoder_dir, seed=seed, task=task, config=config)
    spec = make_task(task, "mosi")
    options: dict[str, Any] = dict(
        out_dir=out_dir,
        model_id=f"tiny-{task}-{seed}",
        model_version="test",
        feature_spec=tiny_feature_spec(),
        task=TaskInfo(spec.name, spec.label_min, spec.label_max),
        feature_source="live",
        text_encoder_dir=encoder_dir,
        text_max_length=50,
        audio_dim=AUDIO_DIM,
        vision_dim=VISION_DIM,
        training={"data": "none (random weights, test only)"},
        fp16=False,
        int8=False,
    )
    options.update(request)
    export_bundle(model, ExportRequest(**options))
    return out_dir


def tiny_feature_spec() -> dict[str, Any]:
    return {
        "audio_extractor": "test",
        "audio_dim": AUDIO_DIM,
        "vision_extractor": "test",
        "vision_dim": VISION_DIM,
        "text_max_length": 50,
    }
