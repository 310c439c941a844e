"""BERT's [CLS] state computed with the padding removed: the export-time twin of `TextEncoder(...)[:, 0, :]`.

A padded batch of B texts of at most L tokens makes HF's BertModel run every dense layer on B×L rows. Here the
real tokens are packed into one [T, hidden] matrix (T = number of real tokens) before the embeddings, every
dense layer and LayerNorm runs on those T rows only, and only attention, which mixes tokens within a text,
sees them scattered back into [B, heads, L, d] with the usual additive mask. Query, key and value are one
[hidden, 3·hidden] product (the same weights, concatenated). Self-MM reads only [CLS] from the last layer, so
that layer computes keys and values for every token but its query, attention output and feed-forward for
[CLS] alone. The arithmetic per computed row is BERT's, so the [CLS] state matches BertModel's to float
rounding (tests/exporters/test_packed_text.py); a micro-batch costs what its real tokens cost, whatever the
spread of lengths.

Used only in the exported inference graph (training keeps MMSA's padded BertModel). It needs right-padded
masks (real tokens first, [CLS] at position 0), which the tokenizer and the agent's `pad_batch` produce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel


def can_pack(encoder: nn.Module) -> bool:
    """Only BERT with absolute positions: RoBERTa derives positions from the ids, others differ more."""
    config = getattr(encoder, "config", None)
    return isinstance(encoder, BertModel) and getattr(config, "position_embedding_type", "absolute") == "absolute"


class PackedBertCLS(nn.Module):
    """forward(input_ids, attention_mask, token_type_ids) -> float32 [B, hidden]: the [CLS] hidden state.

    The fused projections copy the encoder's weights when this is built: build it after loading them."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        if not can_pack(bert):
            raise ValueError("PackedBertCLS needs a BertModel with absolute position embeddings")
        self.bert = bert
        config = bert.config
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.head_dim = self.hidden // self.heads
        *lower, last = bert.encoder.layer
        self.qkv = nn.ModuleList(_fused(layer.attention.self, ("query", "key", "value")) for layer in lower)
        self.last_kv = _fused(last.attention.self, ("key", "value"))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        batch, length = input_ids.shape
        is_real = attention_mask.reshape(-1) > 0  # [B·L]
        real = torch.nonzero(is_real).squeeze(1)  # [T]: flat positions of real tokens
        # packed row of every flat position. Padding borrows row 0: as a key it is masked out (softmax weight
        # exactly 0), as a query its output is dropped, so any finite row will do and none is copied in.
        slot = torch.cumsum(is_real.to(torch.int64), 0) - 1
        pack_index = torch.where(is_real, slot, torch.zeros_like(slot))
        cls_rows = pack_index.view(batch, length)[:, 0]  # [CLS] is each text's first token

        embeddings = self.bert.embeddings
        positions = torch.arange(length, device=input_ids.device).repeat(batch)
        x = embeddings.word_embeddings(input_ids.reshape(-1)[real])
        x = x + embeddings.token_type_embeddings(token_type_ids.reshape(-1)[real])
        x = embeddings.LayerNorm(x + embeddings.position_embeddings(positions[real]))  # [T, hidden]

        # attention runs heads-first ([heads, B, L, d]), so only packed rows are ever transposed
        additive_mask = (1.0 - attention_mask[None, :, None, :].to(x.dtype)) * torch.finfo(torch.float32).min
        *lower, last = self.bert.encoder.layer
        for qkv, layer in zip(self.qkv, lower, strict=True):
            q, k, v = self._heads(qkv(x), 3, pack_index, batch, length).unbind(0)
            context = self._attend(q, k, v, additive_mask)  # [heads, B, L, d]
            context = context.reshape(self.heads, batch * length, self.head_dim)[:, real]
            x = self._feed_forward(layer, context.transpose(0, 1).reshape(-1, self.hidden), x)
        k, v = self._heads(self.last_kv(x), 2, pack_index, batch, length).unbind(0)
        cls = x[cls_rows]  # [B, hidden]
        q = last.attention.self.query(cls).view(batch, self.heads, 1, self.head_dim).transpose(0, 1)
        context = self._attend(q, k, v, additive_mask)  # [heads, B, 1, d]
        return self._feed_forward(last, context.transpose(0, 1).reshape(batch, self.hidden), cls)

    def _heads(
        self, projected: torch.Tensor, parts: int, pack_index: torch.Tensor, batch: int, length: int
    ) -> torch.Tensor:
        """[T, parts·hidden] -> [parts, heads, B, L, d], padded positions filled from row 0."""
        by_head = projected.view(projected.shape[0], parts * self.heads, self.head_dim).transpose(0, 1)
        return by_head[:, pack_index].view(parts, self.heads, batch, length, self.head_dim)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(q, k.transpose(2, 3)) * (self.head_dim**-0.5) + additive_mask
        return torch.matmul(F.softmax(scores, dim=-1), v)

    @staticmethod
    def _feed_forward(layer: Any, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """BERT's attention output projection and feed-forward block, row by row."""
        attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + residual)
        return layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)


def _fused(attention: Any, names: tuple[str, ...]) -> nn.Linear:
    """One Linear computing several of the attention's projections side by side (weights concatenated)."""
    parts: tuple[nn.Linear, ...] = tuple(getattr(attention, name) for name in names)
    fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts))
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused.to(parts[0].weight.dtype)
