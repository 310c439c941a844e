"""The model card (`card.json`): what a bundle's graph computes, from which features, and how it was checked.

Plain dataclasses and JSON only (no torch): the agent reads cards at serve time, the exporters write them.
The graph's input names and axes are defined here once (`GRAPH_INPUTS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.errors import ModelError
from core.speaker_reference import ReferenceRecipe

CARD_VERSION = 1
CARD_FILE = "card.json"
FeatureSource = Literal["live", "mmsa_dataset"]
MODALITIES = ("text", "audio", "vision")
DEFAULT_MODEL_NAME = "self_mm"
# Where `affectstream model bundle` writes the default sentiment bundle and serving looks for it.
DEFAULT_BUNDLE_DIR = Path(".affectstream") / "bundles" / "sentiment-default"
# The graph's inputs, in order, with dtype and axes: the one definition exporters, bundles and the scorer use.
GRAPH_INPUTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("input_ids", "int64", ("batch", "text_length")),
    ("attention_mask", "int64", ("batch", "text_length")),
    ("token_type_ids", "int64", ("batch", "text_length")),
    ("audio", "float32", ("batch", "audio_length", "audio_dim")),
    ("audio_lengths", "int64", ("batch",)),
    ("vision", "float32", ("batch", "vision_length", "vision_dim")),
    ("vision_lengths", "int64", ("batch",)),
)
INPUT_NAMES = tuple(name for name, _, _ in GRAPH_INPUTS)
LENGTH_AXES = ("text_length", "audio_length", "vision_length")


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One regression target of the graph: which outputs hold it and its label range."""

    name: str  # e.g. "sentiment", "depression"
    label_min: float
    label_max: float
    output: str = "M"  # the multimodal score
    unimodal_outputs: dict[str, str] = field(default_factory=lambda: {"t": "T", "a": "A", "v": "V"})


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name: "int64", "float32"
    shape: tuple[int | str, ...]  # str = a dynamic axis


@dataclass(frozen=True, slots=True)
class GraphFile:
    """An ONNX file of the bundle with its sha256, plus external-data files (if any) with theirs."""

    path: str  # relative to the bundle directory
    sha256: str
    size_bytes: int
    external_data: dict[str, str] = field(default_factory=dict)  # relative path -> sha256


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """ONNX Runtime vs a reference (torch eval-mode, or the fp32 graph for variants)."""

    passed: bool
    reference: str
    atol: float
    max_abs_diff: dict[str, float]  # per output, worst over all cases
    mean_abs_diff: dict[str, float]
    worst_case: str
    cases: tuple[str, ...]
    provider: str = "CPUExecutionProvider"
    note: str = ""


@dataclass(frozen=True, slots=True)
class Variant:
    """A derived graph (fp16 for CUDA, int8 for CPU) with its measured accuracy change."""

    name: Literal["fp16", "int8"]
    graph: GraphFile
    intended_provider: str
    validation: ValidationResult


@dataclass(frozen=True, slots=True)
class UninformedInput:
    """The neutral input fed to a modality the training data did not inform (its branch saw only this)."""

    rows: tuple[tuple[float, ...], ...]  # float32 [n, D]; the length fed is n
    reason: str

    def as_array(self) -> Any:
        return np.asarray(self.rows, dtype=np.float32).reshape(len(self.rows), -1)


@dataclass(frozen=True, slots=True)
class ModelCard:
    model_id: str
    model_version: str
    created_utc: str
    architecture: str
    tasks: tuple[TaskInfo, ...]
    feature_spec: dict[str, Any]
    feature_source: FeatureSource  # "mmsa_dataset": features the agent cannot compute live
    text_encoder: str
    text_max_length: int
    text_vocab_size: int  # token ids must be below this (the encoder's embedding rows)
    tokenizer_files: tuple[str, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int
    graph: GraphFile
    validation: ValidationResult
    training: dict[str, Any]  # data, splits, seeds, metrics
    informed_modalities: tuple[str, ...]
    uninformed_inputs: dict[str, UninformedInput] = field(default_factory=dict)  # modality -> neutral input
    variants: tuple[Variant, ...] = ()
    live_scoring_note: str = ""
    # the graph runs BERT's dense layers on real tokens only (exporters/packed_text.py): padding is nearly
    # free, so the scorer need not group a batch by text length
    text_packed: bool = False
    intended_use: str = "Research and monitoring aid. Not a clinical instrument: do not use for diagnosis or treatment."
    # which model the graph computes (models/registry.py: self_mm, lmf, tfn, mult); cards written before
    # other models existed hold Self-MM
    model_name: str = DEFAULT_MODEL_NAME
    # length axis -> the fewest steps the graph computes on (MulT's unpadded convolutions); inputs are
    # zero-padded up to it (`pad_to_min_lengths`). Empty: any length from 1.
    min_lengths: dict[str, int] = field(default_factory=dict)
    # the audio columns the graph expects relative to the speaker's running reference (core/speaker_reference.py),
    # subtracted by the agent before the graph; None: the graph reads the descriptors as they are
    audio_reference: ReferenceRecipe | None = None
    card_version: int = CARD_VERSION

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def input_info(self, name: str) -> TensorInfo:
        for info in self.inputs:
            if info.name == name:
                return info
        raise ModelError(f"model card declares no input {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def write(self, bundle_dir: Path) -> Path:
        path = bundle_dir / CARD_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Parse a card; a missing or malformed field raises ModelError naming it."""
        version = data.get("card_version")
        if version != CARD_VERSION:
            raise ModelError(
                f"model card version {version!r} is not supported (expected {CARD_VERSION}): re-export the bundle"
            )
        try:
            return _parse_card(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed model card: {type(exc).__name__}: {exc}") from None

    @classmethod
    def read(cls, bundle_dir: Path) -> ModelCard:
        path = bundle_dir / CARD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{bundle_dir}: not a model bundle (no {CARD_FILE})") from None
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: expected a JSON object")
        return cls.from_dict(data)


def _parse_validation(data: dict[str, Any]) -> ValidationResult:
    return ValidationResult(
        passed=bool(data["passed"]),
        reference=str(data["reference"]),
        atol=float(data["atol"]),
        max_abs_diff={str(k): float(v) for k, v in data["max_abs_diff"].items()},
        mean_abs_diff={str(k): float(v) for k, v in data["mean_abs_diff"].items()},
        worst_case=str(data["worst_case"]),
        cases=tuple(str(c) for c in data["cases"]),
        provider=str(data.get("provider", "CPUExecutionProvider")),
        note=str(data.get("note", "")),
    )


def _parse_graph(data: dict[str, Any]) -> GraphFile:
    return GraphFile(
        path=str(data["path"]),
        sha256=str(data["sha256"]),
        size_bytes=int(data["size_bytes"]),
        external_data={str(k): str(v) for k, v in data.get("external_data", {}).items()},
    )


def _parse_tensor(data: dict[str, Any]) -> TensorInfo:
    shape = tuple(dim if isinstance(dim, str) else int(dim) for dim in data["shape"])
    return TensorInfo(name=str(data["name"]), dtype=str(data["dtype"]), shape=shape)


def _parse_min_lengths(data: dict[str, Any]) -> dict[str, int]:
    out = {str(axis): int(steps) for axis, steps in data.items()}
    for axis, steps in out.items():
        if axis not in LENGTH_AXES or steps < 1:
            raise ValueError(f"min_lengths[{axis!r}] must name one of {', '.join(LENGTH_AXES)} with a count >= 1")
    return out


def _parse_card(data: dict[str, Any]) -> ModelCard:
    source = data["feature_source"]
    if source not in ("live", "mmsa_dataset"):
        raise ValueError(f"feature_source must be 'live' or 'mmsa_dataset', got {source!r}")
    informed = tuple(str(m) for m in data["informed_modalities"])
    uninformed = {
        str(name): UninformedInput(
            rows=tuple(tuple(float(x) for x in row) for row in entry["rows"]), reason=str(entry["reason"])
        )
        for name, entry in data.get("uninformed_inputs", {}).items()
    }
    for name, entry in uninformed.items():
        if name not in ("audio", "vision") or not entry.rows:
            raise ValueError(f"uninformed_inputs[{name!r}] must be audio or vision with at least one row")
    return ModelCard(
        model_id=str(data["model_id"]),
        model_version=str(data["model_version"]),
        created_utc=str(data["created_utc"]),
        architecture=str(data["architecture"]),
        tasks=tuple(
            TaskInfo(
                name=str(t["name"]),
                label_min=float(t["label_min"]),
                label_max=float(t["label_max"]),
                output=str(t["output"]),
                unimodal_outputs={str(k): str(v) for k, v in t.get("unimodal_outputs", {}).items()},
            )
            for t in data["tasks"]
        ),
        feature_spec=dict(data["feature_spec"]),
        feature_source=source,
        text_encoder=str(data["text_encoder"]),
        text_max_length=int(data["text_max_length"]),
        text_vocab_size=int(data["text_vocab_size"]),
        tokenizer_files=tuple(str(f) for f in data["tokenizer_files"]),
        inputs=tuple(_parse_tensor(t) for t in data["inputs"]),
        outputs=tuple(_parse_tensor(t) for t in data["outputs"]),
        opset=int(data["opset"]),
        graph=_parse_graph(data["graph"]),
        validation=_parse_validation(data["validation"]),
        training=dict(data["training"]),
        informed_modalities=informed,
        uninformed_inputs=uninformed,
        variants=tuple(
            Variant(
                name=v["name"],
                graph=_parse_graph(v["graph"]),
                intended_provider=str(v["intended_provider"]),
                validation=_parse_validation(v["validation"]),
            )
            for v in data.get("variants", [])
        ),
        text_packed=bool(data.get("text_packed", False)),
        live_scoring_note=str(data.get("live_scoring_note", "")),
        intended_use=str(data.get("intended_use", "")),
        model_name=str(data.get("model_name", DEFAULT_MODEL_NAME)),
        min_lengths=_parse_min_lengths(data.get("min_lengths", {})),
        audio_reference=(ReferenceRecipe.from_dict(data["audio_reference"])
                         if data.get("audio_reference") is not None else None),
        card_version=int(data["card_version"]),
    )


def pad_to_min_lengths(feeds: Mapping[str, np.ndarray], min_lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The graph's inputs zero-padded at the end of each length axis to at least `min_lengths[axis]` steps (the
    card's); the *_lengths inputs keep the true lengths."""
    out = dict(feeds)
    for name, _, axes in GRAPH_INPUTS:
        widths = [(0, max(0, min_lengths.get(axis, 0) - out[name].shape[i])) for i, axis in enumerate(axes)]
        if any(after for _, after in widths):
            out[name] = np.pad(out[name], widths)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_graph(bundle_dir: Path, relative_path: str) -> GraphFile:
    """GraphFile for an ONNX file in the bundle, hashing it and any external-data files beside it."""
    path = bundle_dir / relative_path
    external = {
        p.name: sha256_file(p) for p in sorted(bundle_dir.glob(Path(relative_path).name + ".data*")) if p.is_file()
    }
    return GraphFile(
        path=relative_path, sha256=sha256_file(path), size_bytes=path.stat().st_size, external_data=external
    )
