"""The models this project trains, exports and serves, by name: Self-MM and MMSA's LMF, TFN and MulT.

One entry per model: its config class, its model class, how it trains (Self-MM: ULGM's Trainer; the others:
their module's loss and optimiser in `BaselineTrainer`), the outputs its graph has, and what the exporter and
the serving agent must know about its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from core.card import DEFAULT_MODEL_NAME
from models import lmf, mult, tfn
from models.config import SelfMMConfig
from models.errors import ModelConfigError
from models.lmf import LMF, LMFConfig
from models.mult import MulT, MulTConfig
from models.selfmm import SelfMM
from models.tasks import Task
from models.tfn import TFN, TFNConfig
from models.train import FitResult, Trainer, TrainOptions
from models.train_baseline import BaselineRecipe, BaselineTrainer

DEFAULT_MODEL = DEFAULT_MODEL_NAME
UNIMODAL_OUTPUTS = ("T", "A", "V")


class ModelConfig(Protocol):
    """What every model's config has (SelfMMConfig, LMFConfig, TFNConfig, MulTConfig)."""

    model_name: ClassVar[str]

    @property
    def text_encoder_dir(self) -> str: ...
    @property
    def audio_dim(self) -> int: ...
    @property
    def vision_dim(self) -> int: ...
    @property
    def dataset(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def early_stop(self) -> int: ...
    @property
    def task_spec(self) -> Task: ...
    def to_dict(self) -> dict[str, Any]: ...


class ModelTrainer(Protocol):
    """Self-MM's Trainer and BaselineTrainer: fit with early stopping, evaluate with the task's metrics."""

    device: torch.device

    def fit(self, model: Any, train: Dataset[Any], valid: Dataset[Any]) -> FitResult: ...
    def evaluate(self, model: Any, dataset: Dataset[Any], desc: str = ...) -> dict[str, float]: ...


def _no_min_lengths(config: Any) -> dict[str, int]:
    return {}


def _mult_min_lengths(config: MulTConfig) -> dict[str, int]:
    """MulT projects each modality that is not already `d` wide with an unpadded Conv1d: a sequence shorter than
    its kernel has no output step. The graph is fed at least that many steps (zero padding, as MMSA's pickles)."""
    width = config.dst_feature_dim_nheads[0]
    kernels = (config.conv1d_kernel_size_l, config.conv1d_kernel_size_a, config.conv1d_kernel_size_v)
    axes = ("text_length", "audio_length", "vision_length")
    return {
        axis: kernel
        for axis, dim, kernel in zip(axes, config.feature_dims, kernels, strict=True)
        if dim != width and kernel > 1
    }


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str  # the CLI's --model and the card's model_name
    title: str  # paper and reference implementation
    architecture: str  # the model card's architecture line
    config_class: type[Any]  # preset(name, *, text_encoder_dir, audio_dim, vision_dim, task, **overrides), from_dict
    model_class: type[nn.Module]  # Model(config, load_text_weights=...)
    recipe: BaselineRecipe | None  # None: Self-MM, trained by ULGM's Trainer
    outputs: tuple[str, ...]  # the graph's outputs: M, and T/A/V for a model with unimodal heads
    text_cls_only: bool  # reads only the text encoder's [CLS] state (exporters/packed_text.py can pack it)
    min_lengths: Callable[[Any], dict[str, int]] = _no_min_lengths  # graph axis -> steps the model needs

    @property
    def unimodal_heads(self) -> bool:
        return all(head in self.outputs for head in UNIMODAL_OUTPUTS)

    def preset(self, preset: str, **kwargs: Any) -> ModelConfig:
        config: ModelConfig = self.config_class.preset(preset, **kwargs)
        return config

    def config_from_dict(self, data: dict[str, Any]) -> ModelConfig:
        config: ModelConfig = self.config_class.from_dict(data)
        return config

    def build(self, config: ModelConfig, *, load_text_weights: bool = True) -> nn.Module:
        return self.model_class(config, load_text_weights=load_text_weights)

    def trainer(self, config: ModelConfig, options: TrainOptions | None = None) -> ModelTrainer:
        if self.recipe is None:
            assert isinstance(config, SelfMMConfig)
            return Trainer(config, options)
        return BaselineTrainer(config, self.recipe, options)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "self_mm",
            "Self-MM (Yu et al., AAAI 2021)",
            "Self-MM (Yu et al., AAAI 2021) as in MMSA 2.2.1; LSTM state gathered at length-1",
            SelfMMConfig,
            SelfMM,
            None,
            ("M", *UNIMODAL_OUTPUTS),
            text_cls_only=True,
        ),
        ModelSpec(
            "lmf",
            "LMF (Liu et al., ACL 2018)",
            "LMF (Liu et al., ACL 2018) as in MMSA 2.2.1, on a frozen text encoder's token states; "
            "audio/vision means over valid frames",
            LMFConfig,
            LMF,
            BaselineRecipe(lmf.loss, lmf.build_optimizer),
            ("M",),
            text_cls_only=False,
        ),
        ModelSpec(
            "tfn",
            "TFN (Zadeh et al., EMNLP 2017)",
            "TFN (Zadeh et al., EMNLP 2017) as in MMSA 2.2.1, on a frozen text encoder's token states; "
            "audio/vision means over valid frames",
            TFNConfig,
            TFN,
            BaselineRecipe(tfn.loss, tfn.build_optimizer),
            ("M",),
            text_cls_only=False,
        ),
        ModelSpec(
            "mult",
            "MulT (Tsai et al., ACL 2019)",
            "MulT (Tsai et al., ACL 2019) as in MMSA 2.2.1, on a frozen text encoder's token states; "
            "reads padded sequences whole",
            MulTConfig,
            MulT,
            BaselineRecipe(mult.loss, mult.build_optimizer, mult.build_scheduler),
            ("M",),
            text_cls_only=False,
            min_lengths=_mult_min_lengths,
        ),
    )
}
MODEL_NAMES = tuple(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The entry called `name`; ModelConfigError naming the choices otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelConfigError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}") from None


def spec_of(model: nn.Module) -> ModelSpec:
    """The entry whose model class built `model`."""
    for spec in MODELS.values():
        if type(model) is spec.model_class:
            return spec
    raise ModelConfigError(f"{type(model).__name__} is not a registered model ({', '.join(MODEL_NAMES)})")
