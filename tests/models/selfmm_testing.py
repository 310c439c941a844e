"""Helpers of the model tests: MMSA 2.2.1's own objects built from our config, and test batches."""

from __future__ import annotations

from typing import Any

import torch

from models.config import SelfMMConfig

TINY_VOCAB = 200


def mmsa_args(config: SelfMMConfig, **extra: Any) -> Any:
    """An MMSA 2.2.1 `args` EasyDict for self_mm equivalent to `config` (what MMSA_run would build)."""
    from easydict import EasyDict

    args = EasyDict(
        model_name="self_mm", dataset_name=config.dataset, train_mode="regression",
        need_model_aligned=False, need_data_aligned=False, need_normalized=False, use_bert=True,
        transformers=config.transformers, pretrained=config.text_encoder_dir,
        feature_dims=[config.text_out, config.audio_dim, config.vision_dim], excludeZero=config.exclude_zero,
        KeyEval="Loss", save_labels=False, device=torch.device("cpu"), cur_seed=1,
        custom_feature=None, feature_T=None, feature_A=None, feature_V=None,
    )
    for key, value in config.to_dict().items():
        args.setdefault(key, value)
    args.update(extra)
    return args


def mmsa_model(config: SelfMMConfig) -> torch.nn.Module:
    from MMSA.models.AMIO import AMIO

    return AMIO(mmsa_args(config))


def random_batch(config: SelfMMConfig, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """B=5 with mixed lengths: length 1, full length, text padding, and non-zero garbage in the padding."""
    g = torch.Generator().manual_seed(seed)
    b, length, t_a, t_v = 5, 12, 9, 7
    ids = torch.randint(5, vocab, (b, length), generator=g)
    text_lengths = torch.tensor([12, 2, 7, 1, 5])
    mask = (torch.arange(length)[None, :] < text_lengths[:, None]).long()
    ids = ids * mask
    audio_lengths = torch.tensor([9, 1, 4, 1, 6])
    vision_lengths = torch.tensor([1, 7, 3, 5, 7])
    audio = torch.randn(b, t_a, config.audio_dim, generator=g)
    vision = torch.randn(b, t_v, config.vision_dim, generator=g)
    audio[2, 4:] = 0  # zero padding for one sample, garbage padding for the others
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "audio": audio, "audio_lengths": audio_lengths,
            "vision": vision, "vision_lengths": vision_lengths}


def mmsa_call(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Call MMSA's AMIO the MMSA way: text as float [B,3,L], (tensor, lengths) tuples."""
    text = torch.stack([batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]], 1).float()
    return model(text, (batch["audio"], batch["audio_lengths"]), (batch["vision"], batch["vision_lengths"]))
