"""Self-MM (Yu et al., AAAI 2021) with MMSA 2.2.1's architecture and parameter names (docs/selfmm.md §2).

One deliberate deviation: the audio/video LSTMs run over the padded batch and gather the output at each
sequence's last valid step instead of packing. For a 1-layer unidirectional LSTM that is exactly MMSA's packed
h_n (tests/models/test_selfmm_parity.py), and it exports to ONNX with dynamic axes (docs/selfmm.md §2.3, §8).
Two optional audio-input knobs (off by default, so MMSA's model is unchanged) are described at `AudioSteps`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel, RobertaConfig, RobertaModel

from models.config import AudioPool, SelfMMConfig
from models.errors import ModelConfigError

_ENCODERS: dict[str, tuple[type[PreTrainedModel], type[PretrainedConfig]]] = {
    "bert": (BertModel, BertConfig),
    "roberta": (RobertaModel, RobertaConfig),
}


def _exporting() -> bool:
    compiler = torch.compiler
    return bool(
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or compiler.is_compiling()
        or (hasattr(compiler, "is_exporting") and compiler.is_exporting())
    )


class TextEncoder(nn.Module):
    """A BERT-family encoder (attribute `model`, as MMSA's BertTextEncoder); returns last_hidden_state."""

    def __init__(
        self, encoder_dir: str, transformers: str, use_finetune: bool, load_weights: bool,
        finetune_top_layers: int | None = None,
    ) -> None:
        super().__init__()
        if transformers not in _ENCODERS:
            raise ModelConfigError(f"unknown transformers family {transformers!r}: expected bert or roberta")
        if not (Path(encoder_dir) / "config.json").is_file():
            raise ModelConfigError(f"{encoder_dir}: not a text encoder directory (no config.json)")
        model_class, config_class = _ENCODERS[transformers]
        # eager attention: sdpa's data-dependent mask helpers break export, and parity is measured with eager
        if load_weights:
            self.model = model_class.from_pretrained(encoder_dir, attn_implementation="eager")
        else:
            config = config_class.from_pretrained(encoder_dir)
            self.model = model_class._from_config(config, attn_implementation="eager")
        self.use_finetune = use_finetune
        if use_finetune and finetune_top_layers is not None:
            self.freeze_below(finetune_top_layers)

    def freeze_below(self, top_layers: int) -> None:
        """Only the top `top_layers` transformer layers (and the pooler) keep requires_grad."""
        layers: nn.ModuleList = self.model.encoder.layer  # type: ignore[assignment,union-attr]
        if top_layers > len(layers):
            raise ModelConfigError(f"finetune_top_layers={top_layers}, but the encoder has {len(layers)} layers")
        embeddings: nn.Module = self.model.embeddings  # type: ignore[assignment]
        for module in (embeddings, *layers[: len(layers) - top_layers]):
            for parameter in module.parameters():
                parameter.requires_grad = False

    def trainable_parameter_names(self) -> list[str]:
        """state_dict keys (relative to this module) of the parameters training changes."""
        if not self.use_finetune:
            return []
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        with torch.set_grad_enabled(self.use_finetune and torch.is_grad_enabled()):
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
        return out[0]  # float32 [B, L, hidden]


class AuViSubNet(nn.Module):
    """1-layer LSTM over a padded sequence, its state at the last valid step (MMSA) or the mean of its states
    over the valid steps (`pool="mean"`, docs/selfmm.md §2.6), then a linear projection."""

    def __init__(
        self, in_size: int, hidden_size: int, out_size: int, dropout: float, pool: AudioPool = "last"
    ) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden_size, num_layers=1, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(hidden_size, out_size)
        self.pool = pool

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: float32 [B, T, D]; lengths: int64 [B] in 1..T
        if not _exporting():
            _check_lengths(lengths, x.shape[1])
        output, _ = self.rnn(x)  # [B, T, H]
        lengths = lengths.to(device=output.device, dtype=torch.long)
        if self.pool == "mean":
            valid = (torch.arange(output.shape[1], device=output.device)[None, :] < lengths[:, None]).to(output.dtype)
            state = (output * valid[..., None]).sum(dim=1) / lengths.to(output.dtype)[:, None]  # [B, H]
        else:
            index = (lengths - 1).view(-1, 1, 1)
            state = output.gather(1, index.expand(-1, 1, output.shape[2])).squeeze(1)  # [B, H]
        return self.linear_1(self.dropout(state))


class AudioSteps(nn.Module):
    """Optional audio input stage (docs/selfmm.md §2.6): per-window centring of chosen columns, per-column
    standardisation, then the masked mean of every `step_frames` consecutive frames as one LSTM step.

    Both depend only on a sequence's own valid frames (padding is masked out), so a window scores the same
    alone or zero-padded in a batch. The mean and std are buffers set from the training set
    (`set_statistics`) and travel in the state dict and the exported graph.
    """

    mean: torch.Tensor
    std: torch.Tensor
    center_selected: torch.Tensor

    def __init__(
        self, dim: int, step_frames: int, standardize: bool,
        center_columns: tuple[int, ...] = (), voiced_column: int | None = None,
    ) -> None:
        super().__init__()
        self.step_frames = step_frames
        self.standardize = standardize
        self.center_columns = tuple(center_columns)
        self.voiced_column = voiced_column
        selected = torch.zeros(dim)
        selected[list(self.center_columns)] = 1.0
        self.register_buffer("center_selected", selected, persistent=False)  # derived from the config
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(torch.clamp(std, min=1e-3))

    def center(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`center_columns` minus their mean over each sequence's voiced frames (valid frames if none)."""
        frames = x.shape[1]
        valid = (torch.arange(frames, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # [B, T]
        weight = valid
        if self.voiced_column is not None:
            voiced = valid * (x[..., self.voiced_column] > 0.5).to(x.dtype)
            has_voiced = (voiced.sum(dim=1, keepdim=True) > 0).to(x.dtype)
            weight = has_voiced * voiced + (1.0 - has_voiced) * valid
        mean = (x * weight[..., None]).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)[:, None]  # [B, D]
        return x - (mean * self.center_selected)[:, None, :] * valid[..., None]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: float32 [B, T, D]; lengths: int64 [B] in 1..T
        if self.center_columns:
            x = self.center(x, lengths)
        if self.standardize:
            x = (x - self.mean) / self.std
        k = self.step_frames
        if k == 1:
            return x, lengths
        batch, frames, dim = x.shape
        pad = (k - frames % k) % k
        valid = (torch.arange(frames + pad, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # [B, T']
        x = F.pad(x, (0, 0, 0, pad)) * valid[..., None]
        sums = x.reshape(batch, -1, k, dim).sum(dim=2)  # [B, T'/k, D]
        counts = valid.reshape(batch, -1, k).sum(dim=2).clamp(min=1.0)  # [B, T'/k]
        return sums / counts[..., None], torch.div(lengths + (k - 1), k, rounding_mode="floor")


def _check_lengths(lengths: torch.Tensor, max_len: int) -> None:
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be a 1-d tensor [B], got shape {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(
            f"sequence lengths must be in 1..{max_len} (the padded length), got "
            f"{int(lengths.min())}..{int(lengths.max())}"
        )


class SelfMM(nn.Module):
    """Self-MM: forward returns M, T, A, V ([B,1]) and Feature_f/t/a/v (post-ReLU first head layers)."""

    def __init__(self, config: SelfMMConfig, *, load_text_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        c = config
        self.text_model = TextEncoder(
            c.text_encoder_dir, c.transformers, c.use_finetune, load_text_weights, c.finetune_top_layers
        )
        hidden = int(self.text_model.model.config.hidden_size)
        if hidden != c.text_out:
            raise ModelConfigError(
                f"text_out={c.text_out} but the encoder in {c.text_encoder_dir} has hidden size {hidden}"
            )
        self.audio_steps = (
            AudioSteps(c.audio_dim, c.audio_step_frames, c.audio_standardize, c.audio_center_columns,
                       c.audio_voiced_column)
            if c.audio_standardize or c.audio_step_frames > 1 or c.audio_center_columns else None
        )
        self.audio_model = AuViSubNet(c.audio_dim, c.a_lstm_hidden_size, c.audio_out, c.a_lstm_dropout, c.audio_pool)
        self.video_model = AuViSubNet(c.vision_dim, c.v_lstm_hidden_size, c.video_out, c.v_lstm_dropout)

        self.post_fusion_dropout = nn.Dropout(c.post_fusion_dropout)
        self.post_fusion_layer_1 = nn.Linear(c.text_out + c.video_out + c.audio_out, c.post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(c.post_fusion_dim, c.post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(c.post_fusion_dim, 1)

        self.post_text_dropout = nn.Dropout(c.post_text_dropout)
        self.post_text_layer_1 = nn.Linear(c.text_out, c.post_text_dim)
        self.post_text_layer_2 = nn.Linear(c.post_text_dim, c.post_text_dim)
        self.post_text_layer_3 = nn.Linear(c.post_text_dim, 1)

        self.post_audio_dropout = nn.Dropout(c.post_audio_dropout)
        self.post_audio_layer_1 = nn.Linear(c.audio_out, c.post_audio_dim)
        self.post_audio_layer_2 = nn.Linear(c.post_audio_dim, c.post_audio_dim)
        self.post_audio_layer_3 = nn.Linear(c.post_audio_dim, 1)

        self.post_video_dropout = nn.Dropout(c.post_video_dropout)
        self.post_video_layer_1 = nn.Linear(c.video_out, c.post_video_dim)
        self.post_video_layer_2 = nn.Linear(c.post_video_dim, c.post_video_dim)
        self.post_video_layer_3 = nn.Linear(c.post_video_dim, 1)

    def forward(
        self,
        input_ids: torch.Tensor,  # int64 [B, L]
        attention_mask: torch.Tensor,  # int64 [B, L], 1 = real token
        token_type_ids: torch.Tensor,  # int64 [B, L], zeros
        audio: torch.Tensor,  # float32 [B, Ta, Da], zero-padded at the end
        audio_lengths: torch.Tensor,  # int64 [B], >= 1
        vision: torch.Tensor,  # float32 [B, Tv, Dv]
        vision_lengths: torch.Tensor,  # int64 [B], >= 1
    ) -> dict[str, torch.Tensor]:
        return self.forward_with_text(self.cls_state(input_ids, attention_mask, token_type_ids), audio,
                                      audio_lengths, vision, vision_lengths)

    def cls_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  token_type_ids: torch.Tensor) -> torch.Tensor:
        """The text encoder's [CLS] state, float32 [B, text_out]: the text input of `forward_with_text`."""
        return self.text_model(input_ids, attention_mask, token_type_ids)[:, 0, :]

    def forward_with_text(
        self,
        text: torch.Tensor,  # float32 [B, text_out]: the encoder's [CLS] state
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        vision: torch.Tensor,
        vision_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Everything after the text encoder (the exported graph computes [CLS] its own way)."""
        if self.audio_steps is not None:
            audio, audio_lengths = self.audio_steps(audio, audio_lengths)
        audio_h = self.audio_model(audio, audio_lengths)
        video_h = self.video_model(vision, vision_lengths)

        fusion = torch.cat([text, audio_h, video_h], dim=-1)
        feature_f = F.relu(self.post_fusion_layer_1(self.post_fusion_dropout(fusion)))
        feature_t = F.relu(self.post_text_layer_1(self.post_text_dropout(text)))
        feature_a = F.relu(self.post_audio_layer_1(self.post_audio_dropout(audio_h)))
        feature_v = F.relu(self.post_video_layer_1(self.post_video_dropout(video_h)))
        return {
            "M": self.post_fusion_layer_3(F.relu(self.post_fusion_layer_2(feature_f))),
            "T": self.post_text_layer_3(F.relu(self.post_text_layer_2(feature_t))),
            "A": self.post_audio_layer_3(F.relu(self.post_audio_layer_2(feature_a))),
            "V": self.post_video_layer_3(F.relu(self.post_video_layer_2(feature_v))),
            "Feature_f": feature_f,
            "Feature_t": feature_t,
            "Feature_a": feature_a,
            "Feature_v": feature_v,
        }
