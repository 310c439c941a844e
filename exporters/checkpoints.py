"""Turn a checkpoint (ours, or an MMSA `.pth`) into a model plus the export request that describes it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from core.card import TaskInfo, UninformedInput, sha256_file
from core.features import FeatureSpec
from core.speaker_reference import ReferenceRecipe
from core.text_input import read_text
from exporters.bundle import ExportRequest
from exporters.errors import ExportError
from models.checkpoint import load_checkpoint, load_mmsa_state_dict
from models.config import SelfMMConfig
from models.registry import DEFAULT_MODEL, ModelConfig

log = logging.getLogger(__name__)

# What MMSA's released pickles hold (docs/selfmm.md §6): none of it can be computed from a live call.
MMSA_FEATURES: dict[str, dict[str, Any]] = {
    "mosi": {
        "audio_extractor": "COVAREP (CMU-MOSI 5-column subset)",
        "audio_dim": 5,
        "vision_extractor": "Facet 4.1 (CMU-MOSI 20-column subset)",
        "vision_dim": 20,
        "text_max_length": 50,
    },
    "mosei": {
        "audio_extractor": "COVAREP (74-d)",
        "audio_dim": 74,
        "vision_extractor": "Facet 4.1 (35-d)",
        "vision_dim": 35,
        "text_max_length": 50,
    },
    "sims": {
        "audio_extractor": "librosa zcr+mfcc20+chroma_cqt @22050 Hz hop 512 (33-d)",
        "audio_dim": 33,
        "vision_extractor": "OpenFace 2.0, mean over 3 frames (709-d)",
        "vision_dim": 709,
        "text_max_length": 39,
    },
}
MMSA_NOTE = (
    "features of the MMSA {preset} dataset ({audio} / {vision}); COVAREP, Facet and the released "
    "OpenFace/librosa pipelines are not part of the agent, so live scoring is refused"
)


def _tokenizer_sha256(text_encoder_dir: Path) -> str:
    path = text_encoder_dir / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{text_encoder_dir}: no tokenizer.json; the bundle needs a fast tokenizer file")
    return sha256_file(path)


def mmsa_export(
    pth: Path, *, preset: str, text_encoder_dir: Path, out_dir: Path, task: str = "sentiment", **options: Any
) -> tuple[nn.Module, ExportRequest]:
    """An MMSA AMIO state dict, loaded strictly into our Self-MM built from the preset and encoder config."""

    if preset not in MMSA_FEATURES:
        raise ExportError(f"unknown preset {preset!r}: expected one of {', '.join(MMSA_FEATURES)}")
    config = SelfMMConfig.preset(preset, text_encoder_dir=text_encoder_dir, task=task)
    model = load_mmsa_state_dict(pth, config)
    features = MMSA_FEATURES[preset]
    spec = {"source": f"mmsa:{preset}", **features, "tokenizer_sha256": _tokenizer_sha256(text_encoder_dir)}
    request = ExportRequest(
        out_dir=out_dir,
        model_id=options.pop("model_id", None) or f"selfmm-mmsa-{preset}-{pth.stem}",
        model_version=options.pop("model_version", None) or sha256_file(pth)[:12],
        task=TaskInfo(config.task, config.label_min, config.label_max),
        feature_spec=spec,
        feature_source="mmsa_dataset",
        text_encoder_dir=text_encoder_dir,
        text_max_length=int(features["text_max_length"]),
        audio_dim=config.audio_dim,
        vision_dim=config.vision_dim,
        training={
            "data": f"MMSA {preset} (as given by --preset; not verifiable from the weights)",
            "checkpoint": pth.name,
            "checkpoint_sha256": sha256_file(pth),
            "metrics": {},
        },
        live_scoring_note=MMSA_NOTE.format(
            preset=preset, audio=features["audio_extractor"], vision=features["vision_extractor"]
        ),
        **options,
    )
    return model, request


def checkpoint_export(
    checkpoint: Path, *, out_dir: Path, feature_spec: dict[str, Any] | None = None, **options: Any
) -> tuple[nn.Module, ExportRequest]:
    """Our checkpoint directory, of any model; the feature spec comes from its metadata unless given explicitly."""

    model, config, raw_metadata = load_checkpoint(checkpoint)
    metadata = _checked_metadata(raw_metadata, checkpoint / "metadata.json")
    encoder_dir = Path(config.text_encoder_dir)
    spec = feature_spec or metadata.get("feature_spec") or _default_feature_spec(encoder_dir, checkpoint)
    informed = tuple(metadata.get("informed_modalities") or ("text", "audio", "vision"))
    training: dict[str, Any] = {
        k: metadata[k]
        for k in ("dataset", "metrics", "seed", "best_epoch", "epochs", "created_utc", "versions")
        if k in metadata
    }
    request = ExportRequest(
        out_dir=out_dir,
        model_id=options.pop("model_id", None) or metadata.get("model_id") or default_model_id(config),
        model_version=options.pop("model_version", None)
        or metadata.get("model_version")
        or sha256_file(checkpoint / "model.safetensors")[:12],
        task=TaskInfo(config.task, config.task_spec.label_min, config.task_spec.label_max),
        feature_spec=dict(spec),
        feature_source="live",
        text_encoder_dir=encoder_dir,
        text_max_length=_text_max_length(spec),
        audio_dim=config.audio_dim,
        vision_dim=config.vision_dim,
        training=training,
        informed_modalities=informed,
        uninformed_inputs=uninformed_inputs(informed, config.audio_dim, config.vision_dim, metadata),
        audio_reference=speaker_recipe(config),
        **options,
    )
    return model, request


def speaker_recipe(config: ModelConfig) -> ReferenceRecipe | None:
    """The card's `audio_reference` of a model trained on speaker-centred audio (Self-MM's audio_speaker_columns)."""
    columns = tuple(getattr(config, "audio_speaker_columns", ()))
    if not columns:
        return None
    return ReferenceRecipe.of(columns, quiet_gate=bool(getattr(config, "audio_quiet_gate", False)),
                              trim_quiet_edges=bool(getattr(config, "audio_trim_quiet_edges", False)),
                              quiet_edge_rows=int(getattr(config, "audio_quiet_edge_rows", 0)))


def default_model_id(config: ModelConfig) -> str:
    """selfmm-sentiment, lmf-sentiment, … (Self-MM's id as before there were other models)."""
    prefix = "selfmm" if config.model_name == DEFAULT_MODEL else config.model_name
    return f"{prefix}-{config.task}"


class _Metadata(BaseModel):
    """The metadata.json fields an export reads, with their types; the others are carried as they are."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model_id: str | None = None
    model_version: str | None = None
    feature_spec: dict[str, Any] | None = None
    informed_modalities: list[Literal["text", "audio", "vision"]] | None = None
    uninformed_inputs: dict[Literal["audio", "vision"], list[list[float]]] | None = None


def _checked_metadata(metadata: dict[str, Any], path: Path) -> dict[str, Any]:
    try:
        _Metadata.model_validate(metadata)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ExportError(f"{path}: {problems}") from None
    return metadata


def _text_max_length(spec: dict[str, Any]) -> int:
    value = spec.get("text_max_length", 50)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ExportError(f"feature spec: text_max_length must be a positive integer, got {value!r}")
    return value


def uninformed_inputs(
    informed: tuple[str, ...], audio_dim: int, vision_dim: int, metadata: dict[str, Any]
) -> dict[str, UninformedInput]:
    """The neutral input of each modality the training data left constant (recorded rows win)."""
    recorded = metadata.get("uninformed_inputs") or {}
    out = {}
    for name, dim in (("audio", audio_dim), ("vision", vision_dim)):
        if name in informed:
            continue
        rows = recorded.get(name) or [[0.0] * dim]
        if any(len(row) != dim for row in rows):
            raise ExportError(f"uninformed_inputs.{name}: every row must have {dim} values (the {name} dim)")
        what = "the explicit 'no face' row" if name == "vision" else "a zero row"
        out[name] = UninformedInput(
            rows=tuple(tuple(float(x) for x in row) for row in rows),
            reason=f"the training data did not inform {name}: its branch is fed {what}, never live input",
        )
    return out


def _default_feature_spec(encoder_dir: Path, checkpoint: Path) -> dict[str, Any]:
    log.warning(
        "%s: metadata.json has no feature_spec; assuming the current extractors with default settings "
        "(pass --feature-spec to state it)",
        checkpoint,
    )
    return FeatureSpec.for_tokenizer(encoder_dir).to_dict()


def read_feature_spec(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(path, "feature spec"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ExportError(f"{path}: cannot read a feature spec JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: a feature spec must be a JSON object")
    return data
