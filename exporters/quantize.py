"""Derived graphs: fp16 for the CUDA provider, int8 dynamic quantisation for CPU; each measured vs fp32."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from core.card import ValidationResult
from exporters.errors import ExportError
from exporters.onnx import InputCase, compare, onnx_runner

log = logging.getLogger(__name__)

# fp16 keeps float32 inputs/outputs (casts inside the graph); ~3 significant digits through the encoder.
FP16_ATOL = 2e-2
INT8_ATOL_FRACTION = 0.05  # of the label range: beyond that the int8 graph is not worth shipping


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    """Float16 weights and activations; inputs and outputs stay float32 so callers do not change."""

    model = onnx.load(str(fp32_path))
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise ExportError(f"fp16 conversion of {fp32_path} failed: {exc}") from exc
    _sort_topologically(converted.graph)  # the converter appends its input casts at the end
    onnx.checker.check_model(converted)
    onnx.save(converted, str(out_path))


def _sort_topologically(graph: Any) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (Kahn's algorithm)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(x in available for x in n.input)]
        if not ready:
            raise ExportError("fp16 graph has a cycle or an input that no node produces")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def validate_fp16(fp16_path: Path, fp32_path: Path, cases: Sequence[InputCase]) -> ValidationResult:
    """fp16 vs fp32 with FP16_ATOL on the CPU provider when it runs the graph; else a structure check."""

    onnx.checker.check_model(onnx.load(str(fp16_path)))
    try:
        candidate = onnx_runner(fp16_path)
    except ExportError as exc:
        log.warning("the CPU provider cannot run the fp16 graph (%s): only its structure was checked", exc)
        return ValidationResult(
            passed=True,
            reference="onnx.checker only",
            atol=FP16_ATOL,
            max_abs_diff={},
            mean_abs_diff={},
            worst_case="",
            cases=(),
            note="structure-checked only: the CPU provider could not run it",
        )
    result = compare(
        candidate,
        onnx_runner(fp32_path),
        cases,
        atol=FP16_ATOL,
        graph_label=str(fp16_path),
        reference_label="fp32 graph (ONNX Runtime CPU)",
    )
    return replace(result, note="measured on the CPU provider; run bench/gpu_check.py for the CUDA provider")


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic (weight-only int8, activations quantised at run time) quantisation for the CPU provider."""

    root = logging.getLogger()
    level = root.level
    # the quantiser logs to the root: an INFO line per tensor, and a WARNING with the whole type for every
    # integer tensor it looks at (the packed text encoder's indexes); its result is measured below instead
    root.setLevel(max(level, logging.ERROR))
    try:
        # per output channel, and only the matrix products (where the time goes): per-tensor scales, or
        # quantised embedding tables, moved the default model's M by up to 0.56 against 0.11 for this
        quantize_dynamic(
            str(fp32_path),
            str(out_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    except Exception as exc:
        raise ExportError(f"int8 quantisation of {fp32_path} failed: {exc}") from exc
    finally:
        root.setLevel(level)


def measure_int8(
    int8_path: Path, fp32_path: Path, cases: Sequence[InputCase], *, label_range: float
) -> ValidationResult:
    """The accuracy change of int8 vs fp32 on M, T, A, V (max and mean |diff|); passed = within budget."""
    atol = INT8_ATOL_FRACTION * label_range
    result = compare(
        onnx_runner(int8_path),
        onnx_runner(fp32_path),
        cases,
        atol=atol,
        graph_label=str(int8_path),
        reference_label="fp32 graph (ONNX Runtime CPU)",
        raise_on_failure=False,
    )
    return replace(result, note=f"accuracy budget {INT8_ATOL_FRACTION:.0%} of the label range")
