"""MulT's crossmodal transformer: MMSA 2.2.1's models/subNets/transformers_encoder/ (fairseq-style, LayerNorm
before each block) with its parameter names, initialisation and order of operations, dropout draws included.

Not carried over, because MMSA's MULT never uses them: the sinusoidal position embedding (MULT builds every
encoder without it), `add_bias_kv`, `add_zero_attn` and the averaged attention weights MMSA returns and
discards. MMSA picks fused or separate q/k/v projections by comparing `data_ptr()`s; here self-attention uses
the fused projection and crossmodal attention the three separate ones, which is what that test picks in every
call MULT makes (its key and value are always two different tensors), and it traces to ONNX.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.errors import ModelConfigError


def future_mask(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """MMSA's buffered_future_mask: [Tt, Ts] of 0 and -inf; -inf where column - row > |Ts - Tt|.

    MMSA writes it as triu(-inf, diagonal=1 + |Ts - Tt|); comparing aranges gives the same matrix and keeps
    both lengths dynamic in an exported graph.
    """
    rows = torch.arange(target.shape[0], device=target.device)
    cols = torch.arange(source.shape[0], device=target.device)
    offset = (cols[-1] - rows[-1]).abs()  # |Ts - Tt| as a tensor (both lengths are >= 1)
    blocked = (cols[None, :] - rows[:, None]) > offset
    return torch.zeros(blocked.shape, dtype=target.dtype, device=target.device).masked_fill(blocked, float("-inf"))


def _xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    """MMSA's Linear(): torch's default init (its random draws included), then Xavier-uniform and zero bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class MultiheadAttention(nn.Module):
    """Multi-head attention over [T, B, E] inputs with one packed in-projection (`in_proj_weight`, [3E, E])."""

    def __init__(self, embed_dim: int, num_heads: int, attn_dropout: float) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ModelConfigError(f"attention width {embed_dim} is not divisible by {num_heads} heads")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.attn_dropout = attn_dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.constant_(self.in_proj_bias, 0.0)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def _project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """Rows part*E .. (part+1)*E of the packed projection: 0 = query, 1 = key, 2 = value."""
        start, end = part * self.embed_dim, (part + 1) * self.embed_dim
        return F.linear(x, self.in_proj_weight[start:end], self.in_proj_bias[start:end])

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention when key and value are None, else crossmodal; [Tq, B, E] -> [Tq, B, E]."""
        tgt_len, bsz, _ = query.shape
        if key is None or value is None:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q, k, v = self._project(query, 0), self._project(key, 1), self._project(value, 2)
        q = q * self.scaling
        heads = bsz * self.num_heads
        q = q.contiguous().view(tgt_len, heads, self.head_dim).transpose(0, 1)  # [B*H, Tq, d]
        k = k.contiguous().view(-1, heads, self.head_dim).transpose(0, 1)  # [B*H, Ts, d]
        v = v.contiguous().view(-1, heads, self.head_dim).transpose(0, 1)
        weights = torch.bmm(q, k.transpose(1, 2))  # [B*H, Tq, Ts]
        if attn_mask is not None:
            weights = weights + attn_mask.unsqueeze(0)
        weights = F.softmax(weights.float(), dim=-1).type_as(weights)
        weights = F.dropout(weights, p=self.attn_dropout, training=self.training)
        attn = torch.bmm(weights, v).transpose(0, 1).contiguous().view(tgt_len, bsz, self.embed_dim)
        return self.out_proj(attn)


class TransformerEncoderLayer(nn.Module):
    """attention block then feed-forward block, each: LayerNorm -> sublayer -> dropout -> + residual."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        attn_mask: bool,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dim, num_heads, attn_dropout)
        self.attn_mask = attn_mask
        self.relu_dropout = relu_dropout
        self.res_dropout = res_dropout
        self.fc1 = _xavier_linear(embed_dim, 4 * embed_dim)
        self.fc2 = _xavier_linear(4 * embed_dim, embed_dim)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in range(2)])

    def forward(
        self, x: torch.Tensor, x_k: torch.Tensor | None = None, x_v: torch.Tensor | None = None
    ) -> torch.Tensor:
        residual = x
        x = self.layer_norms[0](x)
        mask = future_mask(x, x if x_k is None else x_k) if self.attn_mask else None
        if x_k is None or x_v is None:
            x = self.self_attn(x, attn_mask=mask)
        else:
            # MMSA normalises the source with the same LayerNorm as the query, in every layer
            x = self.self_attn(x, self.layer_norms[0](x_k), self.layer_norms[0](x_v), attn_mask=mask)
        x = residual + F.dropout(x, p=self.res_dropout, training=self.training)

        residual = x
        x = F.relu(self.fc1(self.layer_norms[1](x)))
        x = F.dropout(x, p=self.relu_dropout, training=self.training)
        x = F.dropout(self.fc2(x), p=self.res_dropout, training=self.training)
        return residual + x


class TransformerEncoder(nn.Module):
    """`layers` encoder layers and a final LayerNorm. Given x_in_k and x_in_v, every layer attends from the
    (evolving) x to that fixed source sequence: MulT's crossmodal transformer; without them, self-attention."""

    version: torch.Tensor

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        layers: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        embed_dropout: float,
        attn_mask: bool,
    ) -> None:
        super().__init__()
        self.embed_dropout = embed_dropout
        self.embed_scale = math.sqrt(embed_dim)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(embed_dim, num_heads, attn_dropout, relu_dropout, res_dropout, attn_mask)
            for _ in range(layers)
        )
        self.register_buffer("version", torch.tensor([2.0]))  # fairseq's format marker, in MMSA's state dicts
        self.layer_norm = nn.LayerNorm(embed_dim)

    def forward(
        self, x_in: torch.Tensor, x_in_k: torch.Tensor | None = None, x_in_v: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[T, B, E] (and sources [Ts, B, E]) -> [T, B, E]."""
        x = F.dropout(self.embed_scale * x_in, p=self.embed_dropout, training=self.training)
        if x_in_k is None or x_in_v is None:
            for layer in self.layers:
                x = layer(x)
            return self.layer_norm(x)
        # the key and value copies get their own dropout draws, after the query's
        x_k = self.embed_scale * x_in_k
        x_v = self.embed_scale * x_in_v
        x_k = F.dropout(x_k, p=self.embed_dropout, training=self.training)
        x_v = F.dropout(x_v, p=self.embed_dropout, training=self.training)
        for layer in self.layers:
            x = layer(x, x_k, x_v)
        return self.layer_norm(x)
