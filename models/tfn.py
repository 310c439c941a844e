"""TFN (Zadeh et al., EMNLP 2017, tensor fusion) as MMSA 2.2.1 builds and trains it.

MMSA files: models/singleTask/TFN.py (`TFNCore`), trains/singleTask/TFN.py (`loss`, `build_optimizer`),
config/config_regression.json key `tfn` (`TFNConfig.preset`). The outer `TFN` takes Self-MM's seven inputs
(models/tfn_family.py says how, and where padded batches differ from MMSA).

Checkpoints: MMSA's AMIO keys `Model.<name>` are our `core.<name>` (`load_mmsa_state_dict`,
`mmsa_state_dict`); `text_model.*` is our frozen encoder, which MMSA's checkpoint does not hold.

As in MMSA, M is sigmoid(·) · output_range + output_shift, (-3, 3) for every sentiment preset (SIMS
included), and the text dropout (`dropouts[2]`) has no effect (1-layer LSTM). One addition: for the
depression task the preset sets that range to the task's labels (0..24), which MMSA has no task for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.baselines_common import load_mmsa_core_state_dict, mmsa_core_state_dict, regression_loss
from models.tfn_family import FusionConfig, NormalizedFusionModel, SubNet, TextSubNet, check_config, with_one

# MMSA's config/config_regression.json, tfn datasetParams.
_DATASET_PARAMS: dict[str, dict[str, Any]] = {
    "mosi": dict(
        hidden_dims=(128, 32, 128),
        text_out=32,
        post_fusion_dim=64,
        dropouts=(0.3, 0.3, 0.3, 0.5),
        batch_size=32,
        learning_rate=0.001,
    ),
    "mosei": dict(
        hidden_dims=(128, 16, 128),
        text_out=128,
        post_fusion_dim=16,
        dropouts=(0.4, 0.4, 0.4, 0.4),
        batch_size=128,
        learning_rate=0.005,
    ),
    "sims": dict(
        hidden_dims=(128, 32, 128),
        text_out=256,
        post_fusion_dim=32,
        dropouts=(0.4, 0.4, 0.4, 0.4),
        batch_size=32,
        learning_rate=0.0005,
    ),
}


@dataclass(frozen=True, slots=True)
class TFNConfig(FusionConfig):
    """MMSA's tfn parameters (same names) after FusionConfig's encoder and task fields."""

    model_name: ClassVar[str] = "tfn"
    dataset_params: ClassVar[Mapping[str, Mapping[str, Any]]] = _DATASET_PARAMS

    # TFN.py's constants: M = sigmoid(·) * output_range + output_shift
    output_range: float = 6.0
    output_shift: float = -3.0
    # commonParams (need_normalized is always applied, inside the model)
    early_stop: int = 8
    # datasetParams (defaults: mosi)
    hidden_dims: tuple[int, int, int] = (128, 32, 128)  # (text, audio, video)
    text_out: int = 32
    post_fusion_dim: int = 64
    dropouts: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.5)  # (audio, video, text, post_fusion)
    batch_size: int = 32
    learning_rate: float = 0.001

    def __post_init__(self) -> None:
        check_config(self, ("feature_dims", "hidden_dims", "text_out", "post_fusion_dim", "batch_size", "early_stop"))

    @classmethod
    def task_defaults(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """MMSA's (-3, 3) cannot reach the labels of the other tasks: their range instead."""
        if params["task"] == "sentiment":
            return {}
        return {"output_range": params["label_max"] - params["label_min"], "output_shift": params["label_min"]}


class TFNCore(nn.Module):
    """MMSA's TFN network: forward(text_x [B,L,Dt], audio_x [B,1,Da], video_x [B,1,Dv]) → M [B,1] and the
    Feature_t/a/v/f vectors. `text_lengths` (ours, optional) reads the text LSTM at each last real token."""

    def __init__(self, config: TFNConfig) -> None:
        super().__init__()
        text_in, audio_in, video_in = config.feature_dims
        self.text_hidden, self.audio_hidden, self.video_hidden = config.hidden_dims
        self.output_dim = 1  # regression
        self.text_out = config.text_out
        self.post_fusion_dim = config.post_fusion_dim
        audio_prob, video_prob, _text_prob, post_fusion_prob = config.dropouts

        self.audio_subnet = SubNet(audio_in, self.audio_hidden, audio_prob)
        self.video_subnet = SubNet(video_in, self.video_hidden, video_prob)
        self.text_subnet = TextSubNet(text_in, self.text_hidden, self.text_out)

        self.post_fusion_dropout = nn.Dropout(p=post_fusion_prob)
        fused = (self.text_out + 1) * (self.video_hidden + 1) * (self.audio_hidden + 1)
        self.post_fusion_layer_1 = nn.Linear(fused, self.post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(self.post_fusion_dim, self.post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(self.post_fusion_dim, self.output_dim)
        # parameters (not buffers) as in MMSA, so they are in its state dict; never trained
        self.output_range = nn.Parameter(torch.tensor([config.output_range]), requires_grad=False)
        self.output_shift = nn.Parameter(torch.tensor([config.output_shift]), requires_grad=False)

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
        # outer product audio ⊗ video ⊗ text of the 1-extended vectors, flattened in that order; the products
        # are taken in MMSA's order ((a·v)·t), so the values are bit-identical to its bmm
        audio_video = (with_one(audio_h)[:, :, None] * with_one(video_h)[:, None, :]).flatten(1)
        fusion_tensor = (audio_video[:, :, None] * with_one(text_h)[:, None, :]).flatten(1)

        y_1 = F.relu(self.post_fusion_layer_1(self.post_fusion_dropout(fusion_tensor)))
        y_2 = F.relu(self.post_fusion_layer_2(y_1))
        output = torch.sigmoid(self.post_fusion_layer_3(y_2)) * self.output_range + self.output_shift
        return {
            "Feature_t": text_h,
            "Feature_a": audio_h,
            "Feature_v": video_h,
            "Feature_f": fusion_tensor,
            "M": output,
        }


class TFN(NormalizedFusionModel):
    """TFN on Self-MM's seven inputs: forward(input_ids, …, vision_lengths) → {"M": [B,1], Feature_*}."""

    core_class = TFNCore
    core: TFNCore
    config: TFNConfig


# MMSA's TFN AMIO state dict (`Model.*`) to and from model.core; MMSA's TFN criterion (regression): L1 of M.
load_mmsa_state_dict = load_mmsa_core_state_dict
mmsa_state_dict = mmsa_core_state_dict
loss = regression_loss


def build_optimizer(model: TFN, config: TFNConfig) -> torch.optim.Adam:
    """MMSA's TFN optimiser: Adam at learning_rate, no weight decay, over every core parameter except
    output_range/output_shift (MMSA's parameters()[2:])."""
    core = model.core
    fixed = {id(core.output_range), id(core.output_shift)}
    return torch.optim.Adam([p for p in core.parameters() if id(p) not in fixed], lr=config.learning_rate)
