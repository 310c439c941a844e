"""ULGM: Self-MM's unimodal label generation module, as MMSA 2.2.1's trainer implements it (docs/selfmm.md §4).

Labels are stored centred at the task's `label_center` (0 for sentiment, so everything equals MMSA); the
loss targets add the centre back, so the model predicts on the task's own scale.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

MODES = ("fusion", "text", "audio", "vision")
OUTPUT_OF = {"fusion": "M", "text": "T", "audio": "A", "vision": "V"}
FEATURE_OF = {"fusion": "Feature_f", "text": "Feature_t", "audio": "Feature_a", "vision": "Feature_v"}
_MIN = 1e-8


class ULGM:
    """Feature and label memories over the train split, class centres, and the weighted multi-task loss."""

    def __init__(
        self,
        n_train: int,
        dims: dict[str, int],
        *,
        exclude_zero: bool,
        label_bounds: tuple[float, float],
        label_center: float = 0.0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.exclude_zero = exclude_zero
        self.label_bounds = label_bounds
        self.label_center = label_center
        self.feature_map = {m: torch.zeros(n_train, dims[m], device=device) for m in MODES}
        self.center_map = {
            m: {"pos": torch.zeros(dims[m], device=device), "neg": torch.zeros(dims[m], device=device)}
            for m in MODES
        }
        self.label_map = {m: torch.zeros(n_train, device=device) for m in MODES}  # centred labels
        # rows whose unimodal label is a human one (ulgm_keep_human_labels): never regenerated, weight 1
        self.human = {m: torch.zeros(n_train, dtype=torch.bool, device=device) for m in MODES}
        # rows that carry no label at all for a modality (drop_labels): weight 0, outside its class centres
        self.unlabelled = {m: torch.zeros(n_train, dtype=torch.bool, device=device) for m in MODES}
        self._warned_empty: set[str] = set()

    def init_labels(self, indexes: torch.Tensor, labels_m: torch.Tensor) -> None:
        """Before epoch 1 every modality's label is the human multimodal label y_m."""
        for m in MODES:
            self.label_map[m][indexes] = labels_m.to(self.label_map[m]) - self.label_center

    def keep_human_labels(self, mode: str, indexes: torch.Tensor, labels: torch.Tensor) -> None:
        """Rows with a finite human `mode` label keep it (NaN = none: ULGM generates that row's label)."""
        if mode == "fusion":
            raise ValueError("the fusion label is always the human one")
        labels = labels.to(self.label_map[mode])
        known = torch.isfinite(labels)
        rows = indexes[known]
        self.label_map[mode][rows] = labels[known] - self.label_center
        self.human[mode][rows] = True

    def drop_labels(self, mode: str, indexes: torch.Tensor, unlabelled: torch.Tensor) -> None:
        """Rows where `unlabelled` is true teach `mode` nothing: loss weight 0, and their features stay out of
        that modality's class centres, so the labels ULGM generates for the other rows are as without them."""
        if mode == "fusion":
            raise ValueError("every row carries its fusion label")
        self.unlabelled[mode][indexes[unlabelled.to(torch.bool)]] = True

    def targets(self, mode: str, indexes: torch.Tensor) -> torch.Tensor:
        """Current training target of `mode` for the batch, on the task's scale."""
        return self.label_map[mode][indexes] + self.label_center

    def weighted_loss(self, pred: torch.Tensor, mode: str, indexes: torch.Tensor) -> torch.Tensor:
        """mean(w * |pred - target|) with w = 1 for fusion and tanh(|y_s - y_m|) for the unimodal tasks (1 for a
        kept human label)."""
        pred = pred.view(-1)
        target = self.targets(mode, indexes).view(-1)
        if mode == "fusion":
            weight = torch.ones_like(pred)
        else:
            weight = torch.tanh(torch.abs(self.label_map[mode][indexes] - self.label_map["fusion"][indexes]))
            weight = torch.where(self.human[mode][indexes], torch.ones_like(weight), weight)
            weight = torch.where(self.unlabelled[mode][indexes], torch.zeros_like(weight), weight)
        return torch.mean(weight * torch.abs(pred - target))

    def loss(self, outputs: dict[str, torch.Tensor], indexes: torch.Tensor) -> torch.Tensor:
        """L = L_M + L_T + L_A + L_V, with the labels as they are before this batch's update."""
        total = torch.zeros((), device=outputs["M"].device)
        for mode in MODES:
            total = total + self.weighted_loss(outputs[OUTPUT_OF[mode]], mode, indexes)
        return total

    def update_features(self, features: dict[str, torch.Tensor], indexes: torch.Tensor) -> None:
        for m in MODES:
            self.feature_map[m][indexes] = features[FEATURE_OF[m]].detach()

    def update_centers(self) -> None:
        """Class centres of every memory, membership by that modality's current (centred) labels."""
        for m in MODES:
            labels, features = self.label_map[m], self.feature_map[m]
            pos = labels > 0 if self.exclude_zero else labels >= 0
            counted = ~self.unlabelled[m]
            # MMSA's mean over the members, as one product with the membership masks: the same centres up to
            # float rounding, without gathering the rows (per batch over ~40k rows: 14 -> 8 ms on 2 cores)
            members = torch.stack([pos & counted, (labels < 0) & counted]).to(features.dtype)  # [2, N]
            counts = members.sum(dim=1)
            sums = members @ features  # [2, D]
            for k, side in enumerate(("pos", "neg")):
                if bool(counts[k] > 0):
                    self.center_map[m][side] = sums[k] / counts[k]
                elif m not in self._warned_empty:
                    # MMSA would take the mean of nothing (NaN) and poison every label; keep the last centre.
                    self._warned_empty.add(m)
                    log.warning("ULGM: no %s-labelled samples for %s; keeping the previous centre", side, m)

    def _relative_score(self, feature: torch.Tensor, mode: str) -> torch.Tensor:
        d_pos = torch.norm(feature - self.center_map[mode]["pos"], dim=-1)
        d_neg = torch.norm(feature - self.center_map[mode]["neg"], dim=-1)
        return (d_neg - d_pos) / (d_pos + _MIN)

    def update_labels(self, features: dict[str, torch.Tensor], epoch: int, indexes: torch.Tensor) -> None:
        """Momentum update of the batch's unimodal labels (called from epoch 2 on, 1-based `epoch`)."""
        delta_f = self._relative_score(features["Feature_f"].detach(), "fusion")
        labels_m = self.label_map["fusion"][indexes]
        low, high = self.label_bounds
        n = epoch
        for mode in ("text", "audio", "vision"):
            delta_s = self._relative_score(features[FEATURE_OF[mode]].detach(), mode)
            alpha = delta_s / (delta_f + _MIN)
            new = 0.5 * alpha * labels_m + 0.5 * (labels_m + delta_s - delta_f)
            new = torch.clamp(new, min=low, max=high)
            old = self.label_map[mode][indexes]
            updated = (n - 1) / (n + 1) * old + 2 / (n + 1) * new
            fixed = self.human[mode][indexes] | self.unlabelled[mode][indexes]
            self.label_map[mode][indexes] = torch.where(fixed, old, updated)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Generated labels on the task scale (for saving with a run's results)."""
        return {m: (self.label_map[m] + self.label_center).detach().cpu() for m in MODES}
