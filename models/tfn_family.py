"""What MMSA 2.2.1's TFN and LMF (a low-rank TFN) share, for models/tfn.py and models/lmf.py.

- `SubNet`, `TextSubNet`: MMSA's models/subNets/FeatureNets.py, same parameter names.
- `valid_frame_mean`: MMSA's data_loader.py `need_normalized` step (audio/vision averaged over time).
- `NormalizedFusionModel`: the outer model. It takes Self-MM's seven inputs and feeds a core MMSA's inputs:
  the token states of a frozen text encoder (MMSA's pickles carry a frozen BERT's `text` features) and the
  time means of audio and vision.
- `FusionConfig`: the fields their configs begin with; `check_config`: the validation common to them.

What they share with MulT (config plumbing, checkpoints, loss) is in models/baselines_common.py.

Two deviations, both for padded batches only:
- the time mean divides by each sequence's valid frames, where MMSA averages over the padded length (MMSA's
  mean over a pickle padded to T frames is ours times length / T); without padding the two are equal;
- the text LSTM's state is read at each sequence's last real token (MMSA runs it over the whole padded
  sequence). For a 1-layer unidirectional LSTM that is the final state of the unpadded sequence, so a
  sentence scores the same whatever the batch's padding; without padding it is MMSA's final state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.baselines_common import BaselineConfig, FrozenTextModel, check_text_width, frozen_text_encoder
from models.config import PresetName, check_dataset, check_finite
from models.errors import ModelConfigError
from models.selfmm import _check_lengths, _exporting
from models.tasks import Task, make_task


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


@dataclass(frozen=True, slots=True)
class FusionConfig(BaselineConfig):
    """The fields TFNConfig and LMFConfig begin with: the encoder and the task fields Self-MM's config has."""

    text_encoder_dir: str
    feature_dims: tuple[int, int, int]  # (text, audio, video) input widths; text = the encoder's hidden size
    dataset: PresetName = "mosi"
    task: Literal["sentiment", "depression"] = "sentiment"
    label_min: float = -3.0
    label_max: float = 3.0
    label_center: float = 0.0
    exclude_zero: bool = True
    transformers: Literal["bert", "roberta"] = "bert"

    @property
    def task_spec(self) -> Task:
        return Task(self.task, self.label_min, self.label_max, self.label_center, self.exclude_zero)


class NormalizedFusionModel(FrozenTextModel):
    """Self-MM's seven inputs → (frozen encoder's token states, time means) → a TFN/LMF core.

    Attributes: `text_model` (TextEncoder, frozen and always in eval mode: MMSA's features come from a fixed
    BERT, so no dropout is drawn there) and `core` (`core_class(config)`, MMSA's network; its state dict is
    MMSA's minus `Model.`).
    """

    core_class: ClassVar[type[Any]]  # the core's class: core_class(config) is an nn.Module

    def __init__(self, config: BaselineConfig, *, load_text_weights: bool = True) -> None:
        core = self.core_class(config)  # before the encoder, as MMSA's weights come first from one seed
        super().__init__()
        self.text_model = frozen_text_encoder(config.text_encoder_dir, config.transformers, load_text_weights)
        hidden = int(self.text_model.model.config.hidden_size)
        check_text_width(config.feature_dims[0], config.text_encoder_dir, hidden)
        self.core = core
        self.config = config

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


def check_config(config: Any, sizes: tuple[str, ...]) -> None:
    """Validation common to the TFN/LMF configs: positive sizes, probabilities, finite numbers, task."""
    check_dataset(config)
    for name in sizes:
        values = getattr(config, name)
        for value in values if isinstance(values, tuple) else (values,):
            if int(value) < 1:
                raise ModelConfigError(f"{name} must be >= 1, got {values}")
    if not all(0.0 <= p <= 1.0 for p in config.dropouts):
        raise ModelConfigError(f"dropouts must be probabilities in [0, 1], got {config.dropouts}")
    check_finite(config)
    if not config.label_min < config.label_max:
        raise ModelConfigError(f"label_min ({config.label_min}) must be below label_max ({config.label_max})")
    make_task(config.task, config.dataset)
