"""The single-task baselines' training (LMF, TFN, MulT) in MMSA 2.2.1's order of operations.

MMSA's trains/singleTask/{LMF,TFN,MULT}.py share one loop: epochs until `early_stop` epochs pass without the
rounded valid Loss improving by 1e-6, the best weights kept, then a test pass (do_test: task metrics of M and
the mean of per-batch L1 means as `Loss`). What differs per model comes from its module (`BaselineRecipe`):
the loss, the optimiser and, for MulT, ReduceLROnPlateau on the valid Loss, gradient accumulation over
`update_epochs` batches and value clipping at `grad_clip`. Differences from MMSA, none of which changes the
numbers: the best weights are kept in memory, `max_epochs` can cap the loop, CPU works.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from core.progress import progress_bar
from core.task_metrics import task_metrics
from models.datasets import model_inputs
from models.train import FitResult, TrainOptions, default_device

log = logging.getLogger(__name__)


class BaselineConfig(Protocol):
    """What the loop reads from a baseline's config (LMFConfig, TFNConfig, MulTConfig)."""

    @property
    def task(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def early_stop(self) -> int: ...


LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
SchedulerFn = Callable[[torch.optim.Optimizer, Any], Any]


@dataclass(frozen=True, slots=True)
class BaselineRecipe:
    """A baseline module's training parts (its module-level `loss`, `build_optimizer`, `build_scheduler`)."""

    loss: LossFn
    build_optimizer: Callable[[Any, Any], torch.optim.Optimizer]
    build_scheduler: SchedulerFn | None = None  # stepped with the valid Loss after each epoch (MulT)


def accumulation_steps(config: Any) -> int:
    """MMSA's `update_epochs` (MulT: gradients of that many batches per step); 1 when the model has none."""
    return int(getattr(config, "update_epochs", 1))


def grad_clip_value(config: Any) -> float | None:
    """MMSA's `grad_clip` (MulT; -1 = off); None when the model has none."""
    value = getattr(config, "grad_clip", None)
    return None if value is None or float(value) == -1.0 else float(value)


class BaselineTrainer:
    """MMSA's singleTask do_train / do_test on one of our baselines (same results shape as Self-MM's Trainer)."""

    def __init__(self, config: BaselineConfig, recipe: BaselineRecipe, options: TrainOptions | None = None) -> None:
        self.config = config
        self.recipe = recipe
        self.options = options or TrainOptions()
        self.device = torch.device(self.options.device) if self.options.device else default_device()

    def _loader(self, dataset: Dataset[Any]) -> DataLoader[Any]:
        # MMSA shuffles all three loaders, as for Self-MM
        return DataLoader(
            dataset, batch_size=self.config.batch_size, shuffle=True, num_workers=self.options.num_workers
        )

    def _bar(self, loader: DataLoader[Any], desc: str) -> Any:
        return progress_bar(loader, desc=desc, unit="batch", enabled=self.options.progress, leave=False)

    def fit(self, model: nn.Module, train: Dataset[Any], valid: Dataset[Any]) -> FitResult:
        """Train until early stopping (patience `early_stop` on the rounded valid Loss) or max_epochs."""
        model.to(self.device)
        optimizer = self.recipe.build_optimizer(model, self.config)
        scheduler = self.recipe.build_scheduler(optimizer, self.config) if self.recipe.build_scheduler else None
        train_loader = self._loader(train)
        result = FitResult(best_epoch=0, best_valid={"Loss": 1e8}, epochs=0)
        while True:
            result.epochs += 1
            epoch = result.epochs
            started = time.monotonic()
            train_loss, train_metrics = self._train_epoch(model, optimizer, train_loader, epoch)
            valid_results = self.evaluate(model, valid, desc=f"epoch {epoch} valid")
            if scheduler is not None:
                scheduler.step(valid_results["Loss"])
            if valid_results["Loss"] <= result.best_valid["Loss"] - 1e-6:
                result.best_epoch, result.best_valid = epoch, valid_results
                result.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            result.history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train": train_metrics,
                    "valid": valid_results,
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
            log.info(
                "epoch %d: train loss %.4f, valid Loss %.4f MAE %.4f, best epoch %d (%.1f s)",
                epoch,
                train_loss,
                valid_results["Loss"],
                valid_results.get("MAE", float("nan")),
                result.best_epoch,
                time.monotonic() - started,
            )
            if epoch - result.best_epoch >= self.config.early_stop:
                break
            if self.options.max_epochs is not None and epoch >= self.options.max_epochs:
                break
        return result

    def _train_epoch(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader[Any], epoch: int
    ) -> tuple[float, dict[str, float]]:
        accumulate, clip = accumulation_steps(self.config), grad_clip_value(self.config)
        model.train()
        preds, labels = [], []
        total_loss, left = 0.0, accumulate
        for batch in self._bar(loader, f"epoch {epoch} train"):
            if left == accumulate:
                optimizer.zero_grad()
            left -= 1
            label = batch["label"].view(-1, 1).to(self.device)
            outputs = model(**model_inputs(batch, self.device, trim=self.options.trim_padding))
            loss = self.recipe.loss(outputs, label)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], clip)
            total_loss += loss.item()
            preds.append(outputs["M"].detach().view(-1).cpu())
            labels.append(label.view(-1).cpu())
            if not left:
                optimizer.step()
                left = accumulate
        # with accumulation, the last (n_batches mod update_epochs) gradients are never applied, as in MMSA
        metrics = task_metrics(
            torch.cat(preds).numpy(), torch.cat(labels).numpy(), task=self.config.task, dataset=self.config.dataset
        )
        return total_loss / max(len(loader), 1), metrics

    @torch.no_grad()
    def predict(self, model: nn.Module, dataset: Dataset[Any], desc: str = "predict") -> dict[str, Any]:
        """M predictions, labels, ids and MMSA's eval Loss (mean of per-batch L1 means) over `dataset`."""
        model.to(self.device).eval()
        loader = self._loader(dataset)
        preds, labels, ids, loss_sum = [], [], [], 0.0
        for batch in self._bar(loader, desc):
            output = model(**model_inputs(batch, self.device, trim=self.options.trim_padding))["M"].view(-1)
            label = batch["label"].view(-1).to(self.device)
            loss_sum += torch.mean(torch.abs(output - label)).item()
            preds.append(output.cpu())
            labels.append(label.cpu())
            ids.extend(batch["id"])
        pred: np.ndarray = torch.cat(preds).numpy()
        return {"pred": pred, "true": torch.cat(labels).numpy(), "ids": ids, "loss": loss_sum / max(len(loader), 1)}

    def evaluate(self, model: nn.Module, dataset: Dataset[Any], desc: str = "evaluate") -> dict[str, float]:
        """Task metrics of M plus `Loss` rounded to 4 decimals (MMSA's do_test)."""
        out = self.predict(model, dataset, desc)
        results = task_metrics(out["pred"], out["true"], task=self.config.task, dataset=self.config.dataset)
        results["Loss"] = round(out["loss"], 4)
        return results
