"""MulT (Tsai et al., ACL 2019) as MMSA 2.2.1 runs it: models/singleTask/MULT.py, its trainer
trains/singleTask/MULT.py and the `mult` entry of config/config_regression.json.

`MulTCore` is MMSA's MULT network with its parameter names: forward(text_x, audio_x, video_x) over padded
[B, T, D] sequences. Like MMSA's, it never looks at sequence lengths: the transformers attend to padding too,
and each branch reads its sequence's last *padded* step, so the outputs depend on how far a batch is padded.

`MulT` is the model the project trains, exports and serves, with Self-MM's inputs: MMSA's `text` input (the
pickles' frozen BERT last hidden states, padding positions included) is computed in the graph from the tokens
by a frozen `TextEncoder`, kept in eval mode so that its features are fixed per sample as MMSA's are.

Checkpoint keys. MMSA's AMIO state dict (use_bert=false, as in every MMSA preset) holds `Model.<name>` for
each of MulTCore's keys; here they are `core.<name>`. Our `text_model.*` (the frozen encoder) has no MMSA
counterpart: MMSA's checkpoint does not contain the network that made its text features, so loading an MMSA
checkpoint keeps the encoder the model was built with.

Training, as MMSA's trainer: `loss` (L1 of M), `build_optimizer` (Adam with the learning rate only: the config's
weight_decay is unused there too), and per batch: zero_grad at the start of each window of `update_epochs`
batches, backward, clip_grad_value_(grad_clip) on the gradients summed so far, a step after the window's last
batch (an epoch's last n mod update_epochs batches are never stepped); `build_scheduler` after each epoch with
the rounded valid Loss.

MMSA options refused with a ModelConfigError: use_bert / use_bert_finetune (MMSA's MULT then reads
`args.use_finetune`, which its mult config lacks, and fails), need_model_aligned (AMIO's AlignSubNet is not
implemented here; off in every preset), and need_data_aligned with sequences of different lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.baselines_common import (
    BaselineConfig,
    FrozenTextModel,
    check_text_width,
    frozen_text_encoder,
    load_mmsa_core_state_dict,
    mmsa_core_state_dict,
    regression_loss,
)
from models.config import PresetName, check_dataset, check_finite, encoder_hidden_size
from models.errors import ModelConfigError
from models.mult_transformer import TransformerEncoder
from models.selfmm import _exporting
from models.tasks import Task, make_task

# MMSA 2.2.1 config/config_regression.json, mult datasetParams; "pretrained" (the BERT that made the pickles'
# text features) is replaced by text_encoder_dir.
_DATASET_PARAMS: dict[str, dict[str, Any]] = {
    "mosi": dict(
        attn_dropout_a=0.2,
        attn_dropout_v=0.0,
        relu_dropout=0.0,
        embed_dropout=0.2,
        res_dropout=0.0,
        dst_feature_dim_nheads=(50, 10),
        batch_size=16,
        learning_rate=0.002,
        nlevels=4,
        conv1d_kernel_size_l=5,
        conv1d_kernel_size_a=5,
        conv1d_kernel_size_v=5,
        text_dropout=0.5,
        attn_dropout=0.3,
        output_dropout=0.5,
        grad_clip=0.6,
        patience=5,
        weight_decay=0.005,
        transformers="bert",
    ),
    "mosei": dict(
        attn_dropout_a=0.0,
        attn_dropout_v=0.0,
        relu_dropout=0.0,
        embed_dropout=0.0,
        res_dropout=0.0,
        dst_feature_dim_nheads=(30, 6),
        batch_size=4,
        learning_rate=0.0005,
        nlevels=4,
        conv1d_kernel_size_l=5,
        conv1d_kernel_size_a=1,
        conv1d_kernel_size_v=3,
        text_dropout=0.3,
        attn_dropout=0.4,
        output_dropout=0.5,
        grad_clip=0.6,
        patience=20,
        weight_decay=0.001,
        transformers="bert",
    ),
    "sims": dict(
        attn_dropout_a=0.1,
        attn_dropout_v=0.0,
        relu_dropout=0.0,
        embed_dropout=0.1,
        res_dropout=0.2,
        dst_feature_dim_nheads=(50, 10),
        batch_size=16,
        learning_rate=0.002,
        nlevels=2,
        conv1d_kernel_size_l=5,
        conv1d_kernel_size_a=1,
        conv1d_kernel_size_v=1,
        text_dropout=0.3,
        attn_dropout=0.2,
        output_dropout=0.1,
        grad_clip=0.6,
        patience=10,
        weight_decay=0.001,
        transformers="bert",
    ),
}
_PROBABILITIES = (
    "attn_dropout",
    "attn_dropout_a",
    "attn_dropout_v",
    "relu_dropout",
    "embed_dropout",
    "res_dropout",
    "text_dropout",
    "output_dropout",
)


@dataclass(frozen=True, slots=True)
class MulTConfig(BaselineConfig):
    """MMSA's mult hyperparameters (commonParams and datasetParams, MMSA's names), plus the text encoder."""

    model_name: ClassVar[str] = "mult"
    dataset_params: ClassVar[Mapping[str, Mapping[str, Any]]] = _DATASET_PARAMS
    preset_labels: ClassVar[bool] = False  # no label fields: task_spec is the task's
    overrides_name: ClassVar[str] = "MulTConfig"

    text_encoder_dir: str
    feature_dims: tuple[int, int, int]  # MMSA's (text, audio, vision) input widths; text = the encoder's hidden
    dataset: PresetName = "mosi"
    task: Literal["sentiment", "depression"] = "sentiment"
    transformers: Literal["bert", "roberta"] = "bert"
    # commonParams
    need_data_aligned: bool = False
    need_model_aligned: bool = False
    early_stop: int = 8
    use_bert: bool = False
    use_bert_finetune: bool = False
    attn_mask: bool = True
    update_epochs: int = 8  # gradient accumulation, in mini-batches
    # datasetParams (mosi's)
    attn_dropout_a: float = 0.2
    attn_dropout_v: float = 0.0
    relu_dropout: float = 0.0
    embed_dropout: float = 0.2
    res_dropout: float = 0.0
    dst_feature_dim_nheads: tuple[int, int] = (50, 10)  # transformer width d, attention heads
    batch_size: int = 16
    learning_rate: float = 0.002
    nlevels: int = 4  # crossmodal layers; the self-attention memories use max(nlevels, 3)
    conv1d_kernel_size_l: int = 5
    conv1d_kernel_size_a: int = 5
    conv1d_kernel_size_v: int = 5
    text_dropout: float = 0.5
    attn_dropout: float = 0.3
    output_dropout: float = 0.5
    grad_clip: float = 0.6  # clip_grad_value_ after every backward; -1 = off
    patience: int = 5  # ReduceLROnPlateau
    weight_decay: float = 0.005  # unused, as in MMSA: its MULT trainer gives Adam only the learning rate

    def __post_init__(self) -> None:
        check_dataset(self)
        sizes = {
            "feature_dims": self.feature_dims,
            "dst_feature_dim_nheads": self.dst_feature_dim_nheads,
            "batch_size": (self.batch_size,),
            "update_epochs": (self.update_epochs,),
            "early_stop": (self.early_stop,),
            "nlevels": (self.nlevels,),
            "patience": (self.patience,),
            "conv1d_kernel_size": (self.conv1d_kernel_size_l, self.conv1d_kernel_size_a, self.conv1d_kernel_size_v),
        }
        for name, values in sizes.items():
            if any(int(v) < 1 for v in values):
                raise ModelConfigError(f"{name} must be >= 1, got {values if len(values) > 1 else values[0]}")
        check_finite(self)
        for name in _PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ModelConfigError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        width, heads = self.dst_feature_dim_nheads
        if width % heads:
            raise ModelConfigError(f"dst_feature_dim_nheads: width {width} is not divisible by {heads} heads")
        if not (self.grad_clip > 0 or self.grad_clip == -1.0):
            raise ModelConfigError(f"grad_clip must be > 0, or -1 for no clipping; got {self.grad_clip}")
        if self.use_bert or self.use_bert_finetune:
            raise ModelConfigError(
                "use_bert/use_bert_finetune are not supported for mult (MMSA's MULT then "
                "needs args.use_finetune, which its config lacks): the text encoder is frozen"
            )
        if self.need_model_aligned:
            raise ModelConfigError(
                "need_model_aligned is not supported for mult (MMSA's AlignSubNet); every MMSA mult preset has it off"
            )
        make_task(self.task, self.dataset)  # validates the task name

    @property
    def text_out(self) -> int:
        return self.feature_dims[0]

    @property
    def task_spec(self) -> Task:
        return make_task(self.task, self.dataset)


class MulTCore(nn.Module):
    """MMSA 2.2.1's MULT (use_bert=false, regression): text/audio/video features [B, T, D] -> M and features."""

    def __init__(self, config: MulTConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.orig_d_l, self.orig_d_a, self.orig_d_v = c.feature_dims
        width = c.dst_feature_dim_nheads[0]
        self.d = width  # MMSA's d_l = d_a = d_v
        # created in MMSA's order, so that one seed gives MMSA's initial weights
        self.proj_l = nn.Conv1d(self.orig_d_l, width, kernel_size=c.conv1d_kernel_size_l, padding=0, bias=False)
        self.proj_a = nn.Conv1d(self.orig_d_a, width, kernel_size=c.conv1d_kernel_size_a, padding=0, bias=False)
        self.proj_v = nn.Conv1d(self.orig_d_v, width, kernel_size=c.conv1d_kernel_size_v, padding=0, bias=False)
        # MMSA's get_network: a crossmodal block "x_with_y" (x's queries) uses y's attention dropout;
        # the self-attention memories are 2d wide, with at least 3 layers
        self.trans_l_with_a = self._network(c, width, c.attn_dropout_a, c.nlevels)
        self.trans_l_with_v = self._network(c, width, c.attn_dropout_v, c.nlevels)
        self.trans_a_with_l = self._network(c, width, c.attn_dropout, c.nlevels)
        self.trans_a_with_v = self._network(c, width, c.attn_dropout_v, c.nlevels)
        self.trans_v_with_l = self._network(c, width, c.attn_dropout, c.nlevels)
        self.trans_v_with_a = self._network(c, width, c.attn_dropout_a, c.nlevels)
        self.trans_l_mem = self._network(c, 2 * width, c.attn_dropout, max(c.nlevels, 3))
        self.trans_a_mem = self._network(c, 2 * width, c.attn_dropout, max(c.nlevels, 3))
        self.trans_v_mem = self._network(c, 2 * width, c.attn_dropout, max(c.nlevels, 3))
        combined = 6 * width
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_layer = nn.Linear(combined, 1)

    @staticmethod
    def _network(c: MulTConfig, width: int, attn_dropout: float, layers: int) -> TransformerEncoder:
        return TransformerEncoder(
            width,
            c.dst_feature_dim_nheads[1],
            layers,
            attn_dropout=attn_dropout,
            relu_dropout=c.relu_dropout,
            res_dropout=c.res_dropout,
            embed_dropout=c.embed_dropout,
            attn_mask=c.attn_mask,
        )

    def forward(
        self,
        text_x: torch.Tensor,  # float32 [B, L, Dt]: the text encoder's last hidden states
        audio_x: torch.Tensor,  # float32 [B, Ta, Da]
        video_x: torch.Tensor,  # float32 [B, Tv, Dv]
    ) -> dict[str, torch.Tensor]:
        """M [B, 1]; Feature_t/a/v [B, 2d] (each branch's last step); Feature_f [B, 6d] (their concatenation)."""
        x_l = F.dropout(text_x.transpose(1, 2), p=self.config.text_dropout, training=self.training)
        x_a = audio_x.transpose(1, 2)
        x_v = video_x.transpose(1, 2)
        # a modality already d wide is not projected (MMSA's rule; its Conv1d then stays unused)
        seq_l = (x_l if self.orig_d_l == self.d else self.proj_l(x_l)).permute(2, 0, 1)  # [T', B, d]
        seq_a = (x_a if self.orig_d_a == self.d else self.proj_a(x_a)).permute(2, 0, 1)
        seq_v = (x_v if self.orig_d_v == self.d else self.proj_v(x_v)).permute(2, 0, 1)

        # the order of the nine blocks is MMSA's (it fixes the order of the dropout draws)
        h_l = torch.cat([self.trans_l_with_a(seq_l, seq_a, seq_a), self.trans_l_with_v(seq_l, seq_v, seq_v)], dim=2)
        last_l = self.trans_l_mem(h_l)[-1]
        h_a = torch.cat([self.trans_a_with_l(seq_a, seq_l, seq_l), self.trans_a_with_v(seq_a, seq_v, seq_v)], dim=2)
        last_a = self.trans_a_mem(h_a)[-1]
        h_v = torch.cat([self.trans_v_with_l(seq_v, seq_l, seq_l), self.trans_v_with_a(seq_v, seq_a, seq_a)], dim=2)
        last_v = self.trans_v_mem(h_v)[-1]

        last = torch.cat([last_l, last_a, last_v], dim=1)
        hidden = F.dropout(F.relu(self.proj1(last)), p=self.config.output_dropout, training=self.training)
        residual = self.proj2(hidden) + last
        return {
            "Feature_t": last_l,
            "Feature_a": last_a,
            "Feature_v": last_v,
            "Feature_f": last,
            "M": self.out_layer(residual),
        }


class MulT(FrozenTextModel):
    """MulT on Self-MM's seven inputs; forward returns MulTCore's outputs (M [B, 1] and the features)."""

    core: MulTCore

    def __init__(self, config: MulTConfig, *, load_text_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        check_text_width(config.text_out, config.text_encoder_dir, encoder_hidden_size(config.text_encoder_dir))
        self.core = MulTCore(config)
        # MMSA's model has no encoder: building ours must not move the random stream, so that one seed gives
        # MMSA's initial weights and then its dropout draws
        with torch.random.fork_rng(devices=[]):
            self.text_model = frozen_text_encoder(config.text_encoder_dir, config.transformers, load_text_weights)

    def forward(
        self,
        input_ids: torch.Tensor,  # int64 [B, L]
        attention_mask: torch.Tensor,  # int64 [B, L], 1 = real token
        token_type_ids: torch.Tensor,  # int64 [B, L]
        audio: torch.Tensor,  # float32 [B, Ta, Da], zero-padded at the end
        audio_lengths: torch.Tensor,  # int64 [B]: unused, MMSA's MULT reads the padded sequences whole
        vision: torch.Tensor,  # float32 [B, Tv, Dv]
        vision_lengths: torch.Tensor,  # int64 [B]: unused, as audio_lengths
    ) -> dict[str, torch.Tensor]:
        if not _exporting():
            self._check_lengths(input_ids.shape[1], audio.shape[1], vision.shape[1])
        text = self.text_model(input_ids, attention_mask, token_type_ids)  # [B, L, hidden], padding included
        return self.core(text, audio, vision)

    def _check_lengths(self, text: int, audio: int, vision: int) -> None:
        c = self.config
        if c.need_data_aligned and not text == audio == vision:
            raise ModelConfigError(
                f"need_data_aligned=true needs text, audio and vision of one length; got "
                f"{text}, {audio} and {vision} steps"
            )
        core = self.core
        for name, steps, dim, kernel in (
            ("text", text, core.orig_d_l, c.conv1d_kernel_size_l),
            ("audio", audio, core.orig_d_a, c.conv1d_kernel_size_a),
            ("vision", vision, core.orig_d_v, c.conv1d_kernel_size_v),
        ):
            if dim != core.d and steps < kernel:
                raise ValueError(f"{name} has {steps} steps, fewer than its conv1d kernel ({kernel})")


def load_mmsa_state_dict(model: MulT, state_dict: str | Path | Mapping[str, torch.Tensor]) -> MulT:
    """Load an MMSA AMIO(MULT) state dict (`Model.<name>`; a mapping or a `.pth`) strictly into model.core;
    the text encoder keeps its weights."""
    load_mmsa_core_state_dict(model, state_dict, "MMSA MULT state dict")
    return model


# model.core's state dict under MMSA's names (what MMSA's AMIO for mult loads strictly); MMSA's MULT criterion
# (regression): nn.L1Loss (batch mean) between M [B, 1] and the labels.
mmsa_state_dict = mmsa_core_state_dict
loss = regression_loss


def build_optimizer(model: MulT, config: MulTConfig) -> torch.optim.Optimizer:
    """MMSA's: Adam over MULT's parameters with the learning rate only (no weight decay)."""
    return torch.optim.Adam(model.core.parameters(), lr=config.learning_rate)


def build_scheduler(optimizer: torch.optim.Optimizer, config: MulTConfig) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """MMSA's ReduceLROnPlateau (min, factor 0.1, `patience`), stepped with the valid Loss after each epoch.

    MMSA also passes verbose=True (logging only), which torch 2.13 no longer accepts.
    """
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=config.patience)
