"""What the MMSA 2.2.1 baselines (models/tfn.py, models/lmf.py, models/mult.py) share.

- `BaselineConfig`: the base of their frozen config dataclasses: `preset` (MMSA's datasetParams of a dataset,
  its feature widths, the task), `replace`/`to_dict`/`from_dict` (models/config.py's `ConfigDict`) and the
  `audio_dim`/`vision_dim` properties.
- `FrozenTextModel`: the outer model, a frozen text encoder (`text_model`, always in eval mode: MMSA's text
  features come from a fixed BERT) in front of MMSA's network (`core`).
- MMSA checkpoints: MMSA's AMIO keys `Model.<name>` are our `core.<name>`; `text_model.*` has no MMSA
  counterpart (MMSA reads precomputed features) and keeps its own weights.
- `regression_loss`: MMSA's regression criterion for all three.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import _read_state_dict, _strip_prefix, load_state_dict_strict
from models.checkpoint import mmsa_state_dict as _prefixed_state_dict
from models.config import (
    PRESETS,
    ConfigDict,
    check_overrides,
    default_text_encoder_dir,
    encoder_hidden_size,
    task_params,
)
from models.errors import ModelConfigError
from models.selfmm import TextEncoder
from models.tasks import make_task

# MMSA's datasetCommonParams feature_dims (config/config_regression.json): audio and video widths of the
# released pickles; the text width follows our encoder.
DATASET_FEATURE_DIMS: dict[str, tuple[int, int]] = {"mosi": (5, 20), "mosei": (74, 35), "sims": (33, 709)}


class BaselineConfig(ConfigDict):
    """Base of the baselines' config dataclasses (no fields of its own).

    A subclass sets `dataset_params` (MMSA's datasetParams by preset name); `preset_labels` False for a config
    without the task's label fields; `overrides_name`, how an unknown override is reported.
    """

    __slots__ = ()

    model_name: ClassVar[str]
    dataset_params: ClassVar[Mapping[str, Mapping[str, Any]]]
    preset_labels: ClassVar[bool] = True
    overrides_name: ClassVar[str] = "config"

    text_encoder_dir: str
    feature_dims: tuple[int, int, int]  # (text, audio, video) input widths; text = the encoder's hidden size
    transformers: str

    @property
    def audio_dim(self) -> int:
        return self.feature_dims[1]

    @property
    def vision_dim(self) -> int:
        return self.feature_dims[2]

    @classmethod
    def preset(
        cls,
        name: str,
        *,
        text_encoder_dir: str | Path | None = None,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        task: str = "sentiment",
        **overrides: Any,
    ) -> Self:
        """MMSA's params for `name`; audio/vision widths default to the dataset's, the text width to the
        encoder's; then the task, then `overrides` (field names)."""
        if name not in cls.dataset_params:
            raise ModelConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
        encoder = Path(text_encoder_dir) if text_encoder_dir is not None else default_text_encoder_dir()
        default_audio, default_vision = DATASET_FEATURE_DIMS[name]
        spec = make_task(task, name)
        params: dict[str, Any] = dict(cls.dataset_params[name])
        params.update(
            text_encoder_dir=str(encoder),
            feature_dims=(
                encoder_hidden_size(encoder),
                default_audio if audio_dim is None else audio_dim,
                default_vision if vision_dim is None else vision_dim,
            ),
            dataset=name,
        )
        params.update(task_params(spec) if cls.preset_labels else {"task": spec.name})
        check_overrides(cls.overrides_name, cls, overrides)
        params.update(overrides)
        params.update({k: v for k, v in cls.task_defaults(params).items() if k not in overrides})
        return cls(**params)

    @classmethod
    def task_defaults(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fields a preset sets from its other params (an override still wins); none by default."""
        return {}


def frozen_text_encoder(text_encoder_dir: str, transformers: str, load_weights: bool) -> TextEncoder:
    """The text encoder, frozen and in eval mode (`FrozenTextModel.train` keeps it there)."""
    encoder = TextEncoder(text_encoder_dir, transformers, use_finetune=False, load_weights=load_weights)
    encoder.requires_grad_(False)
    encoder.eval()
    return encoder


def check_text_width(text_dim: int, text_encoder_dir: str, hidden: int) -> None:
    """feature_dims[0] must be the encoder's hidden size."""
    if hidden != text_dim:
        raise ModelConfigError(
            f"feature_dims[0]={text_dim} but the encoder in {text_encoder_dir} has hidden size {hidden}"
        )


class FrozenTextModel(nn.Module):
    """A frozen text encoder (`text_model`) in front of MMSA's network (`core`); the subclass builds both."""

    text_model: TextEncoder
    core: nn.Module

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        self.text_model.eval()  # MMSA's text features are fixed per sample: no dropout in the frozen encoder
        return self


def load_mmsa_core_state_dict(
    model: FrozenTextModel,
    state_dict: str | Path | Mapping[str, torch.Tensor],
    name: str = "MMSA state dict",
) -> None:
    """Load an MMSA AMIO state dict (`Model.<name>`, a `.pth` path or a mapping) strictly into model.core;
    the text encoder keeps its weights. `name` names a mapping in errors."""
    source = str(state_dict) if not isinstance(state_dict, Mapping) else name
    load_state_dict_strict(model.core, _strip_prefix(_read_state_dict(state_dict)), source)


def mmsa_core_state_dict(model: FrozenTextModel) -> OrderedDict[str, torch.Tensor]:
    """model.core's state dict under MMSA's `Model.` prefix: what MMSA's AMIO loads strictly."""
    return _prefixed_state_dict(model.core)


def regression_loss(outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """MMSA's regression criterion for TFN, LMF and MULT: nn.L1Loss (batch mean) of M against labels as [B, 1]."""
    return F.l1_loss(outputs["M"], labels.view(-1, 1).to(outputs["M"].dtype))
