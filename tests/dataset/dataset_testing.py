"""Test support for the dataset tests: train Self-MM on a built pickle for one epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_one_epoch(pickle_path: Path, encoder: Path, *, task: str = "sentiment") -> tuple[Any, Any, Any]:
    """Load a built pickle with the project's reader and train Self-MM on it for exactly one epoch."""
    import torch

    from models.config import SelfMMConfig
    from models.datasets import MMSADataset, load_mmsa_pickle
    from models.selfmm import SelfMM
    from models.train import Trainer, TrainOptions

    splits = load_mmsa_pickle(pickle_path)
    train = splits["train"]
    config = SelfMMConfig.preset(
        "mosi", text_encoder_dir=encoder, audio_dim=train.audio_dim, vision_dim=train.vision_dim, task=task,
        batch_size=2, update_epochs=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = SelfMM(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(config, TrainOptions(max_epochs=1, device="cpu", progress=False))
    result = trainer.fit(model, MMSADataset(train), MMSADataset(splits["valid"]))
    return result, before, model.state_dict()
