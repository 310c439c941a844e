"""Operational errors of the exporters: each says which graph, output or file failed and how."""

from __future__ import annotations

from core.errors import AffectstreamError


class ExportError(AffectstreamError):
    """A checkpoint could not be exported (bad input file, unsupported model, I/O failure)."""


class ExportValidationError(ExportError):
    """The exported graph does not reproduce torch within tolerance: the export is rejected."""

    def __init__(self, *, graph: str, output: str, abs_diff: float, atol: float, case: str, message: str = "") -> None:
        detail = message or "ONNX Runtime and torch disagree"
        super().__init__(
            f"{graph}: {detail}: worst |diff| {abs_diff:.3g} on output {output} "
            f"(input case {case}) exceeds atol {atol:g}"
        )
        self.graph = graph
        self.output = output
        self.abs_diff = abs_diff
        self.atol = atol
        self.case = case
