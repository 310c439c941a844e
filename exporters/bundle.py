"""Write a model bundle: validated model.onnx (+ fp16/int8 variants), tokenizer files, card.json.

The bundle is built in a temporary sibling directory and renamed into place only after every check
passed, so a rejected export leaves no bundle behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from core.card import (
    FeatureSource,
    ModelCard,
    TaskInfo,
    UninformedInput,
    ValidationResult,
    Variant,
    describe_graph,
    pad_to_min_lengths,
)
from core.speaker_reference import ReferenceRecipe
from exporters import quantize
from exporters.cases import random_cases, real_text_cases, sample_cases
from exporters.errors import ExportError
from exporters.onnx import (
    DEFAULT_OPSET,
    FP32_ATOL,
    InferenceGraph,
    InputCase,
    export_graph,
    graph_input_names,
    input_infos,
    output_infos,
    validate_graph,
)
from models.registry import spec_of

log = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "config.json",
)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """Everything the card needs besides the model itself."""

    out_dir: Path
    model_id: str
    model_version: str
    task: TaskInfo
    feature_spec: dict[str, Any]
    feature_source: FeatureSource
    text_encoder_dir: Path
    text_max_length: int
    audio_dim: int
    vision_dim: int
    training: dict[str, Any]
    informed_modalities: tuple[str, ...] = ("text", "audio", "vision")
    uninformed_inputs: dict[str, UninformedInput] = field(default_factory=dict)
    audio_reference: ReferenceRecipe | None = None  # columns the agent centres on the speaker before the graph
    live_scoring_note: str = ""
    samples: Path | None = None  # real feature samples (.npz or MMSA pickle) for validation
    opset: int = DEFAULT_OPSET
    atol: float = FP32_ATOL
    fp16: bool = True
    int8: bool = True
    unimodal_outputs: bool = True
    pack_text: bool = True  # BERT's dense layers on real tokens only (exporters/packed_text.py)
    overwrite: bool = False


def validation_cases(
    request: ExportRequest, vocab_size: int, min_lengths: dict[str, int] | None = None
) -> list[InputCase]:
    """Random, real-text and sample cases, padded as the agent pads (up to the card's `min_lengths`)."""
    dims = {"audio_dim": request.audio_dim, "vision_dim": request.vision_dim}
    cases = random_cases(vocab_size=vocab_size, text_max_length=request.text_max_length, **dims)
    cases += real_text_cases(request.text_encoder_dir, text_max_length=request.text_max_length, **dims)
    if request.samples is not None:
        cases += sample_cases(request.samples)
    return [InputCase(case.name, pad_to_min_lengths(case.feeds, min_lengths or {})) for case in cases]


def export_bundle(model: nn.Module, request: ExportRequest) -> ModelCard:
    """Export, validate (ExportValidationError on any disagreement), derive variants, write the bundle."""
    out_dir = request.out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not request.overwrite:
        raise ExportError(f"{out_dir} exists and is not empty: choose another --out or pass --overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        card = _build(model, request, work)
        work.chmod(0o755)  # mkdtemp makes it private; a bundle is read by the serving user
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log.info("bundle %s written: M within %.3g of torch", out_dir, card.validation.max_abs_diff.get("M", 0.0))
    return card


def _build(model: nn.Module, request: ExportRequest, work: Path) -> ModelCard:
    spec = spec_of(model)
    graph = InferenceGraph(model.eval(), unimodal=request.unimodal_outputs, pack_text=request.pack_text)
    vocab_size = int(model.text_model.model.config.vocab_size)  # type: ignore[union-attr, arg-type]
    min_lengths = spec.min_lengths(model.config)
    cases = validation_cases(request, vocab_size, min_lengths)
    graph_path = work / GRAPH_FILE
    export_graph(graph, cases[2], graph_path, opset=request.opset)
    kept = graph_input_names(graph_path)
    validation = validate_graph(graph_path, graph, cases, atol=request.atol)
    variants = []
    if request.fp16:
        variants.append(_fp16_variant(work, graph_path, cases))
    if request.int8:
        label_range = request.task.label_max - request.task.label_min
        variant = _int8_variant(work, graph_path, cases, label_range)
        if variant is not None:
            variants.append(variant)
    tokenizer_files = copy_tokenizer(request.text_encoder_dir, work)
    card = ModelCard(
        model_id=request.model_id,
        model_version=request.model_version,
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        architecture=spec.architecture,
        tasks=(graph_task(request.task, graph.output_names),),
        feature_spec=dict(request.feature_spec),
        feature_source=request.feature_source,
        text_encoder=request.text_encoder_dir.name,
        text_max_length=request.text_max_length,
        text_vocab_size=vocab_size,
        tokenizer_files=tokenizer_files,
        inputs=tuple(i for i in input_infos(request.audio_dim, request.vision_dim) if i.name in kept),
        outputs=output_infos(graph.output_names),
        opset=request.opset,
        graph=describe_graph(work, GRAPH_FILE),
        validation=validation,
        training=dict(request.training),
        informed_modalities=request.informed_modalities,
        uninformed_inputs=dict(request.uninformed_inputs),
        variants=tuple(variants),
        live_scoring_note=request.live_scoring_note,
        text_packed=graph.text_packed,
        model_name=spec.name,
        min_lengths=min_lengths,
        audio_reference=request.audio_reference,
    )
    card.write(work)
    return card


def graph_task(task: TaskInfo, outputs: tuple[str, ...]) -> TaskInfo:
    """The task as the graph computes it: unimodal outputs the graph lacks (a model without those heads, or an
    export without them) are not named, so the agent publishes them as null."""
    return replace(task, unimodal_outputs={k: v for k, v in task.unimodal_outputs.items() if v in outputs})


def _fp16_variant(work: Path, fp32_path: Path, cases: list[InputCase]) -> Variant:
    name = "model.fp16.onnx"
    quantize.convert_fp16(fp32_path, work / name)
    result = quantize.validate_fp16(work / name, fp32_path, cases)
    return Variant("fp16", describe_graph(work, name), "CUDAExecutionProvider", result)


def _int8_variant(work: Path, fp32_path: Path, cases: list[InputCase], label_range: float) -> Variant | None:
    name = "model.int8.onnx"
    quantize.quantize_int8(fp32_path, work / name)
    result: ValidationResult = quantize.measure_int8(work / name, fp32_path, cases, label_range=label_range)
    if not result.passed:
        log.warning(
            "int8 graph dropped: M differs from fp32 by up to %.3g (budget %.3g)",
            result.max_abs_diff.get("M", float("nan")),
            result.atol,
        )
        (work / name).unlink()
        return None
    return Variant(
        "int8",
        describe_graph(work, name),
        "CPUExecutionProvider",
        replace(result, provider="CPUExecutionProvider"),
    )


def copy_tokenizer(text_encoder_dir: Path, bundle_dir: Path) -> tuple[str, ...]:
    """Copy the fast tokenizer files (tokenizer.json is required) into the bundle."""
    if not (text_encoder_dir / "tokenizer.json").is_file():
        raise ExportError(f"{text_encoder_dir}: no tokenizer.json; the agent needs a fast tokenizer file")
    copied = []
    for name in TOKENIZER_FILES:
        source = text_encoder_dir / name
        if source.is_file():
            target_name = "text_encoder_config.json" if name == "config.json" else name
            shutil.copyfile(source, bundle_dir / target_name)
            copied.append(target_name)
    return tuple(copied)
