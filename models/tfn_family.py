"""What MMSA 2.2.1's TFN and LMF (a low-rank TFN) share, for models/tfn.py and models/lmf.py.

- `SubNet`, `TextSubNet`: MMSA's models/subNets/FeatureNets.py, same parameter names.
- `valid_frame_mean`: MMSA's data_loader.py `need_normalized` step (audio/vision averaged over time).
- `NormalizedFusionModel`: the outer model. It takes Self-MM's seven inputs and feeds a core MMSA's inputs:
  the token states of a frozen text encoder (MMSA's pickles carry a frozen BERT's `text` features) and the
  time means of audio and vision.
- config helpers (presets, JSON, validation), the MMSA checkpoint mapping and MMSA's regression loss.

Two deviations, both for padded batches only:
- the time mean divides by each sequence's valid frames, where MMSA averages over the padded length (MMSA's
  mean over a pickle padded to T frames is ours times length / T); without padding the two are equal;
- the text LSTM's state is read at each sequence's last real token (MMSA runs it over the whole padded
  sequence). For a 1-layer unidirectional LSTM that is the final state of the unpadded sequence, so a
  sentence scores the same whatever the batch's padding; without padding it is MMSA's final state.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter, ValidationError
from torch import nn

from models.checkpoint import _read_state_dict, _strip_prefix, load_state_dict_strict
from models.checkpoint import mmsa_state_dict as _prefixed_state_dict
from models.config import PRESETS, default_text_encoder_dir, encoder_hidden_size
from models.errors import ModelConfigError
from models.selfmm import TextEncoder, _check_lengths, _exporting
from models.tasks import make_task

ConfigT = TypeVar("ConfigT")

# MMSA's datasetCommonParams feature_dims (config/config_regression.json): audio and video widths of the
# released pickles; the text width follows our encoder.
DATASET_FEATURE_DIMS: dict[str, tuple[int, int]] = {"mosi": (5, 20), "mosei": (74, 35), "sims": (33, 709)}


class SubNet(nn.Module):
    """MMSA's SubNet: BatchNorm1d → dropout → three Linear+ReLU layers."""

    def __init__(self, in_size: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_size)
        self.drop = nn.Dropout(p=dropout)
        self.linear_1 = nn.Linear(in_size, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        self.linear_3 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_size]
        y = F.relu(self.linear_1(self.drop(self.norm(x))))
        return F.relu(self.linear_3(F.relu(self.linear_2(y))))


class TextSubNet(nn.Module):
    """MMSA's TextSubNet with its 1-layer LSTM; MMSA sets that LSTM's dropout (and `dropout`'s) to 0, so the
    configured text dropout has no effect there, nor here."""

    def __init__(self, in_size: int, hidden_size: int, out_size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden_size, num_layers=1, dropout=0.0, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.linear_1 = nn.Linear(hidden_size, out_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, L, in_size]. lengths None: the state after all L steps (MMSA); else: after lengths[b] steps.
        output, (h_n, _) = self.rnn(x)
        if lengths is None:
            last = h_n.squeeze(0)
        else:
            if not _exporting():
                _check_lengths(lengths, x.shape[1])
            index = (lengths.to(device=output.device, dtype=torch.long) - 1).view(-1, 1, 1)
            last = output.gather(1, index.expand(-1, 1, output.shape[2])).squeeze(1)
        return self.linear_1(self.dropout(last))


def valid_frame_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """MMSA's need_normalized: [B, T, D] → [B, 1, D], the mean over each sequence's valid frames.

    Padding content (even inf or NaN) is ignored. MMSA's loader also zeroes -inf audio before and NaN means
    after; models/datasets.py zeroes -inf and refuses NaN when it reads a pickle.
    """
    if not _exporting():
        _check_lengths(lengths, x.shape[1])
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # [B, T]
    total = torch.where(valid[..., None], x, torch.zeros_like(x)).sum(dim=1, keepdim=True)
    return total / lengths.to(device=x.device, dtype=x.dtype).view(-1, 1, 1)


def with_one(h: torch.Tensor) -> torch.Tensor:
    """[B, H] → [B, 1 + H] with a leading 1, as TFN and LMF append before fusing."""
    return torch.cat([torch.ones_like(h[:, :1]), h], dim=1)


class NormalizedFusionModel(nn.Module):
    """Self-MM's seven inputs → (frozen encoder's token states, time means) → a TFN/LMF core.

    Attributes: `text_model` (TextEncoder, frozen and always in eval mode: MMSA's features come from a fixed
    BERT, so no dropout is drawn there) and `core` (MMSA's network; its state dict is MMSA's minus `Model.`).
    """

    def __init__(
        self, core: nn.Module, text_encoder_dir: str, transformers: str, text_dim: int, load_text_weights: bool
    ) -> None:
        super().__init__()
        self.text_model = TextEncoder(
            text_encoder_dir, transformers, use_finetune=False, load_weights=load_text_weights
        )
        hidden = int(self.text_model.model.config.hidden_size)
        if hidden != text_dim:
            raise ModelConfigError(
                f"feature_dims[0]={text_dim} but the encoder in {text_encoder_dir} has hidden size {hidden}"
            )
        self.text_model.requires_grad_(False)
        self.text_model.eval()
        self.core = core

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        self.text_model.eval()
        return self

    def forward(
        self,
        input_ids: torch.Tensor,  # int64 [B, L]
        attention_mask: torch.Tensor,  # int64 [B, L], 1 = real token (real tokens first)
        token_type_ids: torch.Tensor,  # int64 [B, L]
        audio: torch.Tensor,  # float32 [B, Ta, Da], padded at the end
        audio_lengths: torch.Tensor,  # int64 [B], 1..Ta
        vision: torch.Tensor,  # float32 [B, Tv, Dv]
        vision_lengths: torch.Tensor,  # int64 [B], 1..Tv
    ) -> dict[str, torch.Tensor]:
        text = self.text_model(input_ids, attention_mask, token_type_ids)  # [B, L, text_dim]
        text_lengths = attention_mask.sum(dim=1)
        outputs: dict[str, torch.Tensor] = self.core(
            text,
            valid_frame_mean(audio, audio_lengths),
            valid_frame_mean(vision, vision_lengths),
            text_lengths=text_lengths,
        )
        return outputs


def load_mmsa_core_state_dict(
    model: NormalizedFusionModel, state_dict: str | Path | Mapping[str, torch.Tensor]
) -> None:
    """Load an MMSA AMIO state dict (`Model.<name>`, a `.pth` path or a mapping) strictly into model.core.

    MMSA's `Model.<name>` is our `core.<name>`; the text encoder (`text_model.*`) has no MMSA counterpart
    (MMSA reads precomputed features) and keeps its own weights.
    """
    source = str(state_dict) if not isinstance(state_dict, Mapping) else "MMSA state dict"
    load_state_dict_strict(model.core, _strip_prefix(_read_state_dict(state_dict)), source)


def mmsa_core_state_dict(model: NormalizedFusionModel) -> OrderedDict[str, torch.Tensor]:
    """model.core's state dict under MMSA's `Model.` prefix: what MMSA's AMIO loads strictly."""
    return _prefixed_state_dict(model.core)


def regression_loss(outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """MMSA's regression criterion for TFN and LMF: nn.L1Loss (batch mean) of M against labels as [B, 1]."""
    return F.l1_loss(outputs["M"], labels.view(-1, 1).to(outputs["M"].dtype))


def preset_params(
    name: str,
    dataset_params: Mapping[str, Mapping[str, Any]],
    fields: set[str],
    *,
    text_encoder_dir: str | Path | None,
    audio_dim: int | None,
    vision_dim: int | None,
    task: str,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Constructor arguments of a preset: MMSA's datasetParams[name], the dims, the task's label range."""
    if name not in dataset_params:
        raise ModelConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    encoder = Path(text_encoder_dir) if text_encoder_dir is not None else default_text_encoder_dir()
    default_audio, default_vision = DATASET_FEATURE_DIMS[name]
    spec = make_task(task, name)
    params: dict[str, Any] = dict(dataset_params[name])
    params.update(
        text_encoder_dir=str(encoder),
        feature_dims=(
            encoder_hidden_size(encoder),
            default_audio if audio_dim is None else audio_dim,
            default_vision if vision_dim is None else vision_dim,
        ),
        dataset=name,
        task=spec.name,
        label_min=spec.label_min,
        label_max=spec.label_max,
        label_center=spec.label_center,
        exclude_zero=spec.exclude_zero,
    )
    unknown = set(overrides) - fields
    if unknown:
        raise ModelConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
    params.update(overrides)
    return params


def check_config(config: Any, sizes: tuple[str, ...]) -> None:
    """Validation common to the TFN/LMF configs: positive sizes, probabilities, finite numbers, task."""
    if config.dataset not in PRESETS:
        raise ModelConfigError(f"unknown dataset {config.dataset!r}: expected one of {', '.join(PRESETS)}")
    for name in sizes:
        values = getattr(config, name)
        for value in values if isinstance(values, tuple) else (values,):
            if int(value) < 1:
                raise ModelConfigError(f"{name} must be >= 1, got {values}")
    if not all(0.0 <= p <= 1.0 for p in config.dropouts):
        raise ModelConfigError(f"dropouts must be probabilities in [0, 1], got {config.dropouts}")
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelConfigError(f"{field.name} must be a finite number, got {value}")
    if not config.label_min < config.label_max:
        raise ModelConfigError(f"label_min ({config.label_min}) must be below label_max ({config.label_max})")
    make_task(config.task, config.dataset)


def config_from_dict(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    """A config as read from JSON: unknown or missing fields and wrong types are a ModelConfigError."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    unknown = set(data) - {f.name for f in fields}
    if unknown:
        raise ModelConfigError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in data]
    if missing:
        raise ModelConfigError(f"{cls.__name__} lacks field(s): {', '.join(missing)}")
    try:
        return TypeAdapter(cls).validate_python(dict(data))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelConfigError(f"{cls.__name__}: {problems}") from None
