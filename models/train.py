"""Self-MM training with ULGM, in MMSA 2.2.1's exact order of operations (docs/selfmm.md §4-§5).

Differences from MMSA, none of which changes the numbers: the best weights are kept in memory rather than
written to a file each time; `max_epochs` can cap the loop (MMSA has no cap); an empty ULGM centre keeps its
previous value (MMSA would produce NaN); CPU works (MMSA_run demands CUDA). Two options trade MMSA's exact
random trajectory for speed (off by default): `trim_padding` and `length_buckets` (docs/selfmm.md §5).
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.progress import progress_bar
from core.task_metrics import task_metrics
from models.config import SelfMMConfig
from models.datasets import MMSADataset, model_inputs
from models.selfmm import SelfMM
from models.ulgm import MODES, OUTPUT_OF, ULGM
from models.ulgm_history import LabelHistory

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=torch.nn.Module)

BERT_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")


def setup_seed(seed: int) -> None:
    """MMSA's setup_seed (+ the cuBLAS setting its run.py makes)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:2")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_optimizer(model: SelfMM, config: SelfMMConfig) -> torch.optim.Adam:
    """Adam (coupled L2 decay) over MMSA's five parameter groups (docs/selfmm.md §5)."""
    bert = list(model.text_model.named_parameters())
    other = [
        p for n, p in model.named_parameters()
        if "text_model" not in n and "audio_model" not in n and "video_model" not in n
    ]
    groups = [
        {"params": [p for n, p in bert if not any(nd in n for nd in BERT_NO_DECAY)],
         "weight_decay": config.weight_decay_bert, "lr": config.learning_rate_bert},
        {"params": [p for n, p in bert if any(nd in n for nd in BERT_NO_DECAY)],
         "weight_decay": 0.0, "lr": config.learning_rate_bert},
        {"params": list(model.audio_model.parameters()),
         "weight_decay": config.weight_decay_audio, "lr": config.learning_rate_audio},
        {"params": list(model.video_model.parameters()),
         "weight_decay": config.weight_decay_video, "lr": config.learning_rate_video},
        {"params": other, "weight_decay": config.weight_decay_other, "lr": config.learning_rate_other},
    ]
    return torch.optim.Adam(groups)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True, slots=True)
class TrainOptions:
    max_epochs: int | None = None  # None: until early stopping, as MMSA
    device: str | None = None  # None: CUDA when present, else CPU
    num_workers: int = 0
    progress: bool = True  # a bar per pass over a loader, with its ETA (core.progress)
    # batches cut to their longest text/audio/vision: same outputs, much faster on long-padded pickles, but
    # not MMSA's dropout draws (models.datasets.model_inputs)
    trim_padding: bool = False
    # train batches of rows of similar text length, from pools of this many batches (LengthBucketBatches); with
    # trim_padding a batch then computes little padding (epochs ~30 % shorter on the voices build); None: MMSA's shuffle
    length_buckets: int | None = None
    # each train row's audio starts 0..audio_step_frames-1 frames later, drawn anew per batch (shifted_audio): the
    # audio stage averages fixed blocks of frames, and without it a model reads where its blocks fall
    audio_step_phases: bool = False


class LengthBucketBatches(Sampler[list[int]]):
    """Each pass: the rows shuffled, every pool of `pool_batches` batches sorted by text length (then audio
    length) and cut into batches, and the batches' order shuffled. Every row is in exactly one batch per pass,
    as with a shuffling loader, and there are as many batches; they draw on torch's global RNG, as it does."""

    def __init__(self, text_lengths: np.ndarray, audio_lengths: np.ndarray, batch_size: int,
                 pool_batches: int) -> None:
        if len(text_lengths) != len(audio_lengths) or batch_size < 1 or pool_batches < 1:
            raise ValueError("LengthBucketBatches needs one text and audio length per row and positive sizes")
        self.text_lengths = np.asarray(text_lengths)
        self.audio_lengths = np.asarray(audio_lengths)
        self.batch_size = batch_size
        self.pool = batch_size * pool_batches

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.text_lengths)).numpy()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.pool):
            pool = order[start:start + self.pool]
            pool = pool[np.lexsort((self.audio_lengths[pool], self.text_lengths[pool]))]
            batches.extend(pool[i:i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size))
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i]

    def __len__(self) -> int:
        full, rest = divmod(len(self.text_lengths), self.pool)
        return full * -(-self.pool // self.batch_size) + -(-rest // self.batch_size)


@dataclass(slots=True)
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    generated_labels: dict[str, torch.Tensor] = field(default_factory=dict)
    label_history: LabelHistory | None = None  # ULGM's label distributions after each epoch


class Trainer:
    """Runs MMSA's SELF_MM.do_train / do_test loop on our SelfMM."""

    def __init__(self, config: SelfMMConfig, options: TrainOptions | None = None) -> None:
        self.config = config
        self.options = options or TrainOptions()
        self.device = torch.device(self.options.device) if self.options.device else default_device()
        self.ulgm: ULGM | None = None

    def _loader(self, dataset: Dataset[Any], *, buckets: bool = False) -> DataLoader[Any]:
        pools = self.options.length_buckets
        if buckets and pools is not None:
            if not isinstance(dataset, MMSADataset):
                raise TypeError("length_buckets needs an MMSADataset (its rows' lengths)")
            split = dataset.split
            sampler = LengthBucketBatches(split.text_bert[:, 1].sum(axis=1), split.audio_lengths,
                                          self.config.batch_size, pools)
            return DataLoader(dataset, batch_sampler=sampler, num_workers=self.options.num_workers)
        # MMSA shuffles all three loaders (valid/test too: it changes the batch-mean Loss slightly)
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=True,
                          num_workers=self.options.num_workers)

    def _bar(self, loader: DataLoader[Any], desc: str) -> Any:
        # a pass-through iterator: the batches and their order are the loader's (core.progress)
        return progress_bar(loader, desc=desc, unit="batch", enabled=self.options.progress, leave=False)

    def _new_ulgm(self, n_train: int) -> ULGM:
        c = self.config
        dims = {"fusion": c.post_fusion_dim, "text": c.post_text_dim, "audio": c.post_audio_dim,
                "vision": c.post_video_dim}
        return ULGM(n_train, dims, exclude_zero=c.exclude_zero, label_bounds=c.generated_label_bounds,
                    label_center=c.label_center, device=self.device)

    def fit(self, model: SelfMM, train: Dataset[Any], valid: Dataset[Any]) -> FitResult:
        """Train until early stopping (patience `early_stop` on the rounded valid Loss) or max_epochs."""
        c = self.config
        model.to(self.device)
        optimizer = build_optimizer(model, c)
        train_loader = self._loader(train, buckets=True)
        self.ulgm = ulgm = self._new_ulgm(len(train))  # type: ignore[arg-type]
        for batch in self._bar(train_loader, "init labels"):
            indexes = batch["index"].view(-1).to(self.device)
            ulgm.init_labels(indexes, batch["label"].view(-1).to(self.device))
            if c.text_from_labelled_rows:
                ulgm.drop_labels("text", indexes, ~batch["text_labelled"].view(-1).to(self.device))
            if c.ulgm_keep_human_labels:
                for mode in ("text", "audio", "vision"):
                    key = f"label_{OUTPUT_OF[mode]}"
                    if key in batch:
                        ulgm.keep_human_labels(mode, indexes, batch[key].view(-1).to(self.device))

        label_history = LabelHistory.over_range(c.label_min, c.label_max)
        result = FitResult(best_epoch=0, best_valid={"Loss": 1e8}, epochs=0, label_history=label_history)
        while True:
            result.epochs += 1
            epoch = result.epochs
            started = time.monotonic()
            train_loss, train_metrics = self._train_epoch(model, optimizer, train_loader, epoch)
            label_history.record(epoch, ulgm.state_dict())
            valid_results = self.evaluate(model, valid, desc=f"epoch {epoch} valid")
            if valid_results["Loss"] <= result.best_valid["Loss"] - 1e-6:
                result.best_epoch, result.best_valid = epoch, valid_results
                result.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            result.history.append({"epoch": epoch, "train_loss": train_loss, "train": train_metrics,
                                   "valid": valid_results, "seconds": round(time.monotonic() - started, 2)})
            log.info(
                "epoch %d: train loss %.4f (M MAE %.4f), valid Loss %.4f MAE %.4f, best epoch %d (%.1f s)",
                epoch, train_loss, train_metrics["M"].get("MAE", float("nan")), valid_results["Loss"],
                valid_results.get("MAE", float("nan")), result.best_epoch, time.monotonic() - started,
            )
            if epoch - result.best_epoch >= c.early_stop:
                break
            if self.options.max_epochs is not None and epoch >= self.options.max_epochs:
                break
        result.generated_labels = ulgm.state_dict()
        return result

    def _train_epoch(
        self, model: SelfMM, optimizer: torch.optim.Optimizer, loader: DataLoader[Any], epoch: int
    ) -> tuple[float, dict[str, dict[str, float]]]:
        assert self.ulgm is not None
        ulgm, accumulate = self.ulgm, self.config.update_epochs
        model.train()
        preds: dict[str, list[torch.Tensor]] = {m: [] for m in MODES}
        targets: dict[str, list[torch.Tensor]] = {m: [] for m in MODES}
        total_loss, left = 0.0, accumulate
        for batch in self._bar(loader, f"epoch {epoch} train"):
            if left == accumulate:
                optimizer.zero_grad()
            left -= 1
            indexes = batch["index"].view(-1).to(self.device)
            outputs = self._forward_train(model, batch)
            for m in MODES:
                preds[m].append(outputs[OUTPUT_OF[m]].detach().view(-1).cpu())
                targets[m].append(ulgm.targets(m, indexes).cpu())
            loss = ulgm.loss(outputs, indexes)
            loss.backward()
            total_loss += loss.item()
            features = {k: v.detach() for k, v in outputs.items() if k.startswith("Feature_")}
            if epoch > 1:
                ulgm.update_labels(features, epoch, indexes)
            ulgm.update_features(features, indexes)
            ulgm.update_centers()
            if not left:
                optimizer.step()
                left = accumulate
        # the last (n_batches mod update_epochs) gradients are never applied, as in MMSA
        metrics = {
            OUTPUT_OF[m]: task_metrics(torch.cat(preds[m]).numpy(), torch.cat(targets[m]).numpy(),
                                       task=self.config.task, dataset=self.config.dataset)
            for m in MODES
        }
        return total_loss / max(len(loader), 1), metrics

    def _forward_train(self, model: SelfMM, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = model_inputs(batch, self.device, trim=self.options.trim_padding)
        steps = model.audio_steps.step_frames if model.audio_steps is not None else 1
        if self.options.audio_step_phases and steps > 1:
            inputs["audio"], inputs["audio_lengths"] = shifted_audio(inputs["audio"], inputs["audio_lengths"], steps)
        if not self.config.text_from_labelled_rows:
            return model(**inputs)
        labelled = batch["text_labelled"].view(-1, 1).to(self.device)
        text = model.cls_state(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        text = torch.where(labelled, text, text.detach())  # no gradient into the encoder from the other rows
        return model.forward_with_text(text, inputs["audio"], inputs["audio_lengths"], inputs["vision"],
                                       inputs["vision_lengths"])

    @torch.no_grad()
    def predict(self, model: SelfMM, dataset: Dataset[Any], desc: str = "predict") -> dict[str, Any]:
        """M predictions, labels, ids and MMSA's eval Loss (mean of per-batch L1 means) over `dataset`, and
        the unimodal heads' outputs (`pred_T`, `pred_A`, `pred_V`)."""
        model.to(self.device).eval()
        loader = self._loader(dataset)
        preds: dict[str, list[torch.Tensor]] = {head: [] for head in "MTAV"}
        labels, ids, loss_sum = [], [], 0.0
        for batch in self._bar(loader, desc):
            outputs = model(**model_inputs(batch, self.device, trim=self.options.trim_padding))
            output = outputs["M"].view(-1)
            label = batch["label"].view(-1).to(self.device)
            loss_sum += torch.mean(torch.abs(output - label)).item()
            for head, values in preds.items():
                values.append(outputs[head].view(-1).cpu())
            labels.append(label.cpu())
            ids.extend(batch["id"])
        return {"pred": torch.cat(preds["M"]).numpy(), "true": torch.cat(labels).numpy(), "ids": ids,
                "loss": loss_sum / max(len(loader), 1),
                **{f"pred_{head}": torch.cat(preds[head]).numpy() for head in "TAV"}}

    def evaluate(self, model: SelfMM, dataset: Dataset[Any], desc: str = "evaluate") -> dict[str, float]:
        """Task metrics of M plus `Loss` rounded to 4 decimals (MMSA's do_test)."""
        out = self.predict(model, dataset, desc)
        results = task_metrics(out["pred"], out["true"], task=self.config.task, dataset=self.config.dataset)
        results["Loss"] = round(out["loss"], 4)
        return results


def shifted_audio(audio: torch.Tensor, lengths: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of `audio` [B, T, D] without its first r frames (r uniform in 0..steps-1, drawn from torch's RNG,
    at most length-1), moved to the front; the lengths shortened by r. The frames freed at the end are padding."""
    shift = torch.minimum(torch.randint(0, steps, lengths.shape, device=audio.device), (lengths - 1).clamp(min=0))
    frames = audio.shape[1]
    index = (torch.arange(frames, device=audio.device)[None, :] + shift[:, None]).clamp(max=frames - 1)
    moved = audio.gather(1, index[..., None].expand(-1, -1, audio.shape[2]))
    kept = torch.arange(frames, device=audio.device)[None, :] < (lengths - shift)[:, None]
    return moved * kept[..., None].to(audio.dtype), lengths - shift


def load_best(model: ModelT, result: FitResult) -> ModelT:
    """Put the best epoch's weights back into `model` (MMSA reloads its saved file before testing); any model
    (models/train_baseline.py returns the same FitResult)."""
    if result.best_state:
        model.load_state_dict(copy.deepcopy(result.best_state), strict=True)
    return model
