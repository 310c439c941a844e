"""Checkpoints: MMSA `.pth` state dicts (strict, `Model.` prefix) and our own self-describing directories.

Our checkpoint directory:
    config.json        the model's config, to_dict() (text_encoder_dir rewritten to ./text_encoder on load)
    model.safetensors  the state dict, MMSA names minus `Model.`
    metadata.json      `model_name` (models/registry.py; absent in checkpoints written before it: self_mm) and
                       training metadata: dataset, metrics, informed modalities, seed, versions ...
    text_encoder/      the encoder's config.json and tokenizer files (no weights: they are in the state dict)
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from core.card import DEFAULT_MODEL_NAME
from core.text_input import read_text
from models.config import SelfMMConfig
from models.errors import CheckpointError, ModelConfigError
from models.selfmm import SelfMM

if TYPE_CHECKING:
    from models.registry import ModelConfig

log = logging.getLogger(__name__)

MMSA_PREFIX = "Model."
POSITION_IDS = "text_model.model.embeddings.position_ids"
ENCODER_FILES = (
    "config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "merges.txt", "vocab.json",
)
FORMAT_VERSION = 1


def _read_state_dict(path_or_dict: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict)
    path = Path(path_or_dict)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable torch state dict ({exc})") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return dict(state)


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    unprefixed = [k for k in state if not k.startswith(MMSA_PREFIX)]
    if unprefixed:
        raise CheckpointError(
            f"not an MMSA AMIO state dict: {len(unprefixed)} keys lack the 'Model.' prefix, e.g. "
            f"{', '.join(unprefixed[:5])}"
        )
    return {k[len(MMSA_PREFIX):]: v for k, v in state.items()}


def _align_position_ids(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """transformers < 4.31 saved embeddings.position_ids (arange); newer versions do not expect it."""
    if POSITION_IDS in state and POSITION_IDS not in expected:
        del state[POSITION_IDS]
    elif POSITION_IDS in expected and POSITION_IDS not in state:
        state[POSITION_IDS] = expected[POSITION_IDS].clone()


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True), but with an error that lists every mismatch."""
    expected = model.state_dict()
    _align_position_ids(state, expected)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{title} [{len(items)}]: {'; '.join(items[:10])}{more}")
        raise CheckpointError(f"{source} does not match the model config: " + " | ".join(parts))
    model.load_state_dict(state, strict=True)


def load_mmsa_state_dict(
    path_or_dict: str | Path | Mapping[str, torch.Tensor], config: SelfMMConfig
) -> SelfMM:
    """Build SelfMM(config) (encoder from its config only) and load an MMSA AMIO state dict strictly."""
    source = str(path_or_dict) if not isinstance(path_or_dict, Mapping) else "state dict"
    state = _strip_prefix(_read_state_dict(path_or_dict))
    model = SelfMM(config, load_text_weights=False)
    load_state_dict_strict(model, state, source)
    return model.eval()


def mmsa_state_dict(model: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Our state dict with MMSA's `Model.` prefix (what MMSA's AMIO.load_state_dict expects)."""
    return OrderedDict((MMSA_PREFIX + k, v.detach().cpu().clone()) for k, v in model.state_dict().items())


def save_mmsa_state_dict(model: SelfMM, path: str | Path) -> Path:
    """Write a `.pth` that MMSA 2.2.1's AMIO loads with strict=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mmsa_state_dict(model), path)
    return path


def _copy_encoder_files(encoder_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ENCODER_FILES:
        if (encoder_dir / name).is_file():
            shutil.copy2(encoder_dir / name, target / name)


def save_checkpoint(
    model: torch.nn.Module, config: ModelConfig, path: str | Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write our checkpoint directory of any registered model (see module docstring); returns its path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _copy_encoder_files(Path(config.text_encoder_dir), path / "text_encoder")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    meta = {"format_version": FORMAT_VERSION, **(dict(metadata) if metadata else {}), "model_name": config.model_name}
    (path / "metadata.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log.info("saved checkpoint %s", path)
    return path


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object; CheckpointError (or ConfigError for bad bytes) naming it."""
    try:
        data = json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, not {type(data).__name__}")
    return data


def _model_name(metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("model_name", DEFAULT_MODEL_NAME))


def checkpoint_model_name(path: str | Path) -> str:
    """The model a checkpoint directory holds, from its metadata.json (without loading the weights)."""
    return _model_name(_json_object(Path(path) / "metadata.json", "checkpoint metadata"))


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ModelConfig, dict[str, Any]]:
    """Load our checkpoint directory: (model in eval mode, config, metadata); the model is the one metadata's
    `model_name` names."""
    from models.registry import model_spec  # the registry imports the model modules, which import this one

    path = Path(path)
    for name in ("config.json", "model.safetensors", "metadata.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not a checkpoint directory (no {name})")
    raw_config = _json_object(path / "config.json", "checkpoint config")
    metadata = _json_object(path / "metadata.json", "checkpoint metadata")
    if (path / "text_encoder" / "config.json").is_file():
        raw_config["text_encoder_dir"] = str(path / "text_encoder")
    try:
        spec = model_spec(_model_name(metadata))
    except ModelConfigError as exc:
        raise CheckpointError(f"{path / 'metadata.json'}: model_name: {exc}") from None
    try:
        config = spec.config_from_dict(raw_config)
    except ModelConfigError as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from None
    model = spec.build(config, load_text_weights=False)
    try:
        state = load_file(str(path / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path / 'model.safetensors'}: unreadable ({exc})") from None
    load_state_dict_strict(model, state, str(path))
    return model.eval(), config, metadata
