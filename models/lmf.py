"""LMF (Liu et al., ACL 2018, low-rank multimodal fusion) as MMSA 2.2.1 builds and trains it.

MMSA files: models/singleTask/LMF.py (`LMFCore`), trains/singleTask/LMF.py (`loss`, `build_optimizer`),
config/config_regression.json key `lmf` (`LMFConfig.preset`). The outer `LMF` takes Self-MM's seven inputs
(models/tfn_family.py says how, and where padded batches differ from MMSA).

Checkpoints: MMSA's AMIO keys `Model.<name>` are our `core.<name>` (`load_mmsa_state_dict`,
`mmsa_state_dict`); `text_model.*` is our frozen encoder, which MMSA's checkpoint does not hold.

Kept from MMSA as it is: `fusion_weights` and `fusion_bias` are in no optimiser group (MMSA's trainer takes
parameters [:3] and [5:]), so training never changes them; `post_fusion_dropout` exists but is not applied;
the text dropout (`dropouts[2]`) has no effect (1-layer LSTM). One shape differs: `Feature_f` is [B, rank]
for every batch, where MMSA's `squeeze()` also drops the batch axis of a batch of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.init import xavier_normal_

from models.baselines_common import load_mmsa_core_state_dict, mmsa_core_state_dict, regression_loss
from models.errors import ModelConfigError
from models.tfn_family import FusionConfig, NormalizedFusionModel, SubNet, TextSubNet, check_config, with_one

# MMSA's config/config_regression.json, lmf datasetParams.
_DATASET_PARAMS: dict[str, dict[str, Any]] = {
    "mosi": dict(
        hidden_dims=(128, 16, 128),
        dropouts=(0.3, 0.3, 0.3, 0.3),
        rank=3,
        batch_size=64,
        learning_rate=0.001,
        factor_lr=0.001,
        weight_decay=0.005,
    ),
    "mosei": dict(
        hidden_dims=(128, 16, 128),
        dropouts=(0.2, 0.2, 0.2, 0.2),
        rank=4,
        batch_size=32,
        learning_rate=0.001,
        factor_lr=0.001,
        weight_decay=0.001,
    ),
    "sims": dict(
        hidden_dims=(64, 16, 64),
        dropouts=(0.2, 0.2, 0.2, 0.2),
        rank=4,
        batch_size=64,
        learning_rate=0.002,
        factor_lr=0.0005,
        weight_decay=0.005,
    ),
}


@dataclass(frozen=True, slots=True)
class LMFConfig(FusionConfig):
    """MMSA's lmf parameters (same names) after FusionConfig's encoder and task fields."""

    model_name: ClassVar[str] = "lmf"
    dataset_params: ClassVar[Mapping[str, Mapping[str, Any]]] = _DATASET_PARAMS

    # commonParams (need_normalized is always applied, inside the model)
    early_stop: int = 8
    # datasetParams (defaults: mosi)
    hidden_dims: tuple[int, int, int] = (128, 16, 128)  # (text, audio, video); text subnet output = text // 2
    dropouts: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.3)  # (audio, video, text, post_fusion)
    rank: int = 3
    batch_size: int = 64
    learning_rate: float = 0.001
    factor_lr: float = 0.001
    weight_decay: float = 0.005

    def __post_init__(self) -> None:
        check_config(self, ("feature_dims", "hidden_dims", "rank", "batch_size", "early_stop"))
        if self.hidden_dims[0] < 2:
            raise ModelConfigError(f"hidden_dims[0] must be >= 2 (the text output is half of it): {self.hidden_dims}")


class LMFCore(nn.Module):
    """MMSA's LMF network: forward(text_x [B,L,Dt], audio_x [B,1,Da], video_x [B,1,Dv]) → M [B,1] and the
    Feature_t/a/v/f vectors. `text_lengths` (ours, optional) reads the text LSTM at each last real token."""

    def __init__(self, config: LMFConfig) -> None:
        super().__init__()
        text_in, audio_in, video_in = config.feature_dims
        self.text_hidden, self.audio_hidden, self.video_hidden = config.hidden_dims
        self.text_out = self.text_hidden // 2
        self.output_dim = 1  # regression
        self.rank = config.rank
        audio_prob, video_prob, _text_prob, post_fusion_prob = config.dropouts

        self.audio_subnet = SubNet(audio_in, self.audio_hidden, audio_prob)
        self.video_subnet = SubNet(video_in, self.video_hidden, video_prob)
        self.text_subnet = TextSubNet(text_in, self.text_hidden, self.text_out)

        self.post_fusion_dropout = nn.Dropout(p=post_fusion_prob)  # defined by MMSA, never applied
        self.audio_factor = nn.Parameter(torch.empty(self.rank, self.audio_hidden + 1, self.output_dim))
        self.video_factor = nn.Parameter(torch.empty(self.rank, self.video_hidden + 1, self.output_dim))
        self.text_factor = nn.Parameter(torch.empty(self.rank, self.text_out + 1, self.output_dim))
        self.fusion_weights = nn.Parameter(torch.empty(1, self.rank))
        self.fusion_bias = nn.Parameter(torch.empty(1, self.output_dim))
        for factor in (self.audio_factor, self.video_factor, self.text_factor, self.fusion_weights):
            xavier_normal_(factor)
        nn.init.zeros_(self.fusion_bias)

    def forward(
        self,
        text_x: torch.Tensor,
        audio_x: torch.Tensor,
        video_x: torch.Tensor,
        text_lengths: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        audio_h = self.audio_subnet(audio_x.squeeze(1))
        video_h = self.video_subnet(video_x.squeeze(1))
        text_h = self.text_subnet(text_x, text_lengths)
        # [B, 1+H] @ [rank, 1+H, 1] → [rank, B, 1]; their product is the rank-r fusion
        fusion_zy = (
            torch.matmul(with_one(audio_h), self.audio_factor)
            * torch.matmul(with_one(video_h), self.video_factor)
            * torch.matmul(with_one(text_h), self.text_factor)
        )
        per_sample = fusion_zy.permute(1, 0, 2)  # [B, rank, 1]
        output = torch.matmul(self.fusion_weights, per_sample).flatten(1) + self.fusion_bias  # [B, 1]
        return {
            "Feature_t": text_h,
            "Feature_a": audio_h,
            "Feature_v": video_h,
            "Feature_f": per_sample.squeeze(2),
            "M": output,
        }


class LMF(NormalizedFusionModel):
    """LMF on Self-MM's seven inputs: forward(input_ids, …, vision_lengths) → {"M": [B,1], Feature_*}."""

    core_class = LMFCore
    core: LMFCore
    config: LMFConfig


# MMSA's LMF AMIO state dict (`Model.*`) to and from model.core; MMSA's LMF criterion (regression): L1 of M.
load_mmsa_state_dict = load_mmsa_core_state_dict
mmsa_state_dict = mmsa_core_state_dict
loss = regression_loss


def build_optimizer(model: LMF, config: LMFConfig) -> torch.optim.Adam:
    """MMSA's LMF optimiser: Adam (coupled weight_decay on both groups) over the three factors at factor_lr
    and the three subnets at learning_rate. fusion_weights/fusion_bias are in neither (see module doc)."""
    core = model.core
    subnets = [*core.audio_subnet.parameters(), *core.video_subnet.parameters(), *core.text_subnet.parameters()]
    return torch.optim.Adam(
        [
            {"params": [core.audio_factor, core.video_factor, core.text_factor], "lr": config.factor_lr},
            {"params": subnets, "lr": config.learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
