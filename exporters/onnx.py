"""Export a model's inference graph to ONNX and prove it: ONNX Runtime vs torch, explicit atol, typed failure.

The export spec is declarative: named inputs/outputs with their dynamic axes (below). Every export ends in
`validate_graph`, which raises ExportValidationError with the worst difference if any case exceeds atol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from core.card import GRAPH_INPUTS, INPUT_NAMES, TensorInfo, ValidationResult
from exporters.errors import ExportError, ExportValidationError
from exporters.packed_text import PackedBertCLS, can_pack
from models.registry import UNIMODAL_OUTPUTS, spec_of

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
FP32_ATOL = 1e-4  # ORT vs torch eval on M/T/A/V; measured differences are ~1e-7 (small BERT) to ~1e-5
MULTIMODAL_OUTPUT = "M"
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class InputCase:
    """A named, padded batch of inputs for validation."""

    name: str
    feeds: Feeds


class InferenceGraph(nn.Module):
    """The part of a registered model (models/registry.py) that serving needs: M, and T, A, V when the model
    has those heads and they are asked for; nothing for training.

    With `pack_text`, a model that reads only the text's [CLS] (Self-MM) and a BERT encoder, the [CLS] comes
    from PackedBertCLS, which skips padded tokens; `reference()` is the same model on MMSA's padded path,
    which validation compares against."""

    def __init__(self, model: nn.Module, *, unimodal: bool = True, pack_text: bool = True) -> None:
        super().__init__()
        spec = spec_of(model)
        self.model = model
        self.model_name = spec.name
        self.unimodal = unimodal
        heads = tuple(head for head in UNIMODAL_OUTPUTS if head in spec.outputs) if unimodal else ()
        self.output_names = (MULTIMODAL_OUTPUT, *heads)
        encoder = model.text_model.model  # type: ignore[union-attr]
        packable = pack_text and spec.text_cls_only and can_pack(encoder)  # type: ignore[arg-type]
        self.packed_text = PackedBertCLS(encoder) if packable else None  # type: ignore[arg-type]

    @property
    def text_packed(self) -> bool:
        return self.packed_text is not None

    def reference(self) -> InferenceGraph:
        return InferenceGraph(self.model, unimodal=self.unimodal, pack_text=False)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.packed_text is None:
            out = self.model(*inputs)
        else:
            text = self.packed_text(*inputs[:3])
            out = self.model.forward_with_text(text, *inputs[3:])  # type: ignore[operator]
        return tuple(out[name] for name in self.output_names)


def input_infos(audio_dim: int, vision_dim: int) -> tuple[TensorInfo, ...]:
    dims = {"audio_dim": audio_dim, "vision_dim": vision_dim}
    return tuple(
        TensorInfo(name, dtype, tuple(dims.get(axis, axis) for axis in axes)) for name, dtype, axes in GRAPH_INPUTS
    )


def output_infos(names: Sequence[str]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(name, "float32", ("batch", 1)) for name in names)


def export_graph(graph: InferenceGraph, example: InputCase, path: Path, *, opset: int = DEFAULT_OPSET) -> None:
    """TorchScript-based export (dynamo=False: one self-contained file) with dynamic batch and lengths."""
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: LayerNormalization needs opset >= 17")
    graph.eval()
    dynamic_axes: dict[str, dict[int, str]] = {
        name: {i: axis for i, axis in enumerate(axes) if not axis.endswith("_dim")} for name, _, axes in GRAPH_INPUTS
    }
    dynamic_axes.update({name: {0: "batch"} for name in graph.output_names})
    args = tuple(torch.from_numpy(example.feeds[name]) for name in INPUT_NAMES)
    try:
        with torch.no_grad():
            torch.onnx.export(
                graph,
                args,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=list(graph.output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:  # torch.onnx raises many types; the message is what matters
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc


def graph_input_names(path: Path) -> tuple[str, ...]:
    """The inputs the exported graph kept: torch.onnx drops an input the model never reads (MulT, as MMSA's,
    ignores the audio and vision lengths)."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load the exported graph: {exc}") from exc
    return tuple(i.name for i in session.get_inputs())


def torch_runner(graph: InferenceGraph) -> Callable[[Feeds], dict[str, np.ndarray]]:
    """Reference outputs of the eval-mode torch model for a case."""
    graph.eval()

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        with torch.no_grad():
            values = graph(*(torch.from_numpy(feeds[name]) for name in INPUT_NAMES))
        names = graph.output_names
        return {name: v.numpy().reshape(-1) for name, v in zip(names, values, strict=True)}

    return run


def onnx_runner(path: Path, provider: str = "CPUExecutionProvider") -> Callable[[Feeds], dict[str, np.ndarray]]:
    try:
        session = ort.InferenceSession(str(path), providers=[provider])
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load the exported graph: {exc}") from exc
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]  # the exporter drops inputs a model never reads

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        values = session.run(names, {name: feeds[name] for name in inputs})
        arrays = [np.asarray(v, dtype=np.float32).reshape(-1) for v in values]
        return dict(zip(names, arrays, strict=True))

    return run


def compare(
    candidate: Callable[[Feeds], dict[str, np.ndarray]],
    reference: Callable[[Feeds], dict[str, np.ndarray]],
    cases: Sequence[InputCase],
    *,
    atol: float,
    graph_label: str,
    reference_label: str,
    outputs: Sequence[str] | None = None,
    raise_on_failure: bool = True,
) -> ValidationResult:
    """Worst and mean |candidate - reference| per output over all cases; raise if any exceeds atol."""
    worst: dict[str, float] = {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    worst_case = ("", "", 0.0)  # case, output, diff
    for case in cases:
        got, want = candidate(case.feeds), reference(case.feeds)
        for name in outputs or want.keys():
            if name not in got:
                raise ExportValidationError(
                    graph=graph_label,
                    output=name,
                    abs_diff=float("inf"),
                    atol=atol,
                    case=case.name,
                    message="output missing from the graph",
                )
            diff = np.abs(got[name].astype(np.float64) - want[name].astype(np.float64))
            if not np.isfinite(diff).all():
                diff = np.where(np.isfinite(diff), diff, np.inf)
            case_max = float(diff.max())
            worst[name] = max(worst.get(name, 0.0), case_max)
            sums[name] = sums.get(name, 0.0) + float(diff.sum())
            counts[name] = counts.get(name, 0) + diff.size
            if case_max >= worst_case[2]:
                worst_case = (case.name, name, case_max)
    result = ValidationResult(
        passed=worst_case[2] <= atol,
        reference=reference_label,
        atol=atol,
        max_abs_diff=worst,
        mean_abs_diff={name: sums[name] / counts[name] for name in sums},
        worst_case=f"{worst_case[0]} ({worst_case[1]})",
        cases=tuple(case.name for case in cases),
    )
    log.info(
        "%s vs %s: worst |diff| %.3g on %s (atol %g)",
        graph_label,
        reference_label,
        worst_case[2],
        result.worst_case,
        atol,
    )
    if raise_on_failure and not result.passed:
        raise ExportValidationError(
            graph=graph_label, output=worst_case[1], abs_diff=worst_case[2], atol=atol, case=worst_case[0]
        )
    return result


def validate_graph(
    path: Path, graph: InferenceGraph, cases: Sequence[InputCase], *, atol: float = FP32_ATOL
) -> ValidationResult:
    """ONNX Runtime (CPU) vs eval-mode torch on MMSA's padded path (so a packed text encoder is checked
    too) on every case; ExportValidationError when it disagrees."""
    return compare(
        onnx_runner(path),
        torch_runner(graph.reference()),
        cases,
        atol=atol,
        graph_label=str(path),
        reference_label="torch eval-mode forward, padded text (MMSA's path)",
        outputs=graph.output_names,
    )
