"""A model bundle at serve time: card checks, graph integrity, one ONNX Runtime session (no torch)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from agent import metrics
from core.card import DEFAULT_BUNDLE_DIR, INPUT_NAMES, GraphFile, ModelCard, pad_to_min_lengths, sha256_file
from core.errors import ModelError
from core.speaker_reference import centred, own_reference, without_quiet_edges

log = logging.getLogger(__name__)

GraphVariant = Literal["auto", "fp32", "fp16", "int8"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def feature_spec_mismatch(card_spec: Mapping[str, Any], agent_spec: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the card's feature spec and the agent's (empty = equal)."""
    problems = []
    for key in sorted(set(card_spec) | set(agent_spec)):
        if key not in agent_spec:
            problems.append(f"{key}: the model needs {card_spec[key]!r}, the agent has none")
        elif key not in card_spec:
            problems.append(f"{key}: the agent has {agent_spec[key]!r}, the model card has none")
        elif card_spec[key] != agent_spec[key]:
            problems.append(f"{key}: model {card_spec[key]!r} != agent {agent_spec[key]!r}")
    return problems


def verify_graph(bundle_dir: Path, graph: GraphFile) -> Path:
    """The graph's path, after checking its sha256 (and its external data's) against the card."""
    path = bundle_dir / graph.path
    if not path.is_file():
        raise ModelError(f"{bundle_dir}: graph file {graph.path} is missing: re-export the bundle")
    files = {graph.path: graph.sha256, **graph.external_data}
    for name, expected in files.items():
        file_path = bundle_dir / name
        if not file_path.is_file():
            raise ModelError(f"{bundle_dir}: external data {name} of {graph.path} is missing")
        actual = sha256_file(file_path)
        if actual != expected:
            raise ModelError(
                f"{file_path}: sha256 {actual[:12]}… does not match the model card ({expected[:12]}…): the "
                "graph was modified or belongs to another bundle; re-export it or restore the original file"
            )
    return path


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """One window's inputs for one bundle, after the card's substitutions; unpadded."""

    input_ids: np.ndarray  # int64 [L]
    attention_mask: np.ndarray  # int64 [L]
    token_type_ids: np.ndarray  # int64 [L]
    audio: np.ndarray  # float32 [La, Da], La >= 1
    vision: np.ndarray  # float32 [Lv, Dv], Lv >= 1


class ModelBundle:
    """A loaded bundle: its card, the graph chosen for the providers, one ONNX Runtime session."""

    def __init__(self, path: Path, card: ModelCard, session: Any, graph_name: str) -> None:
        self.path = path
        self.card = card
        self.session = session
        self.graph_name = graph_name  # "fp32", "fp16" or "int8"
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
        self.input_names: tuple[str, ...] = tuple(i.name for i in session.get_inputs())
        self._audio_dim = int(card.input_info("audio").shape[-1])
        self._vision_dim = int(card.input_info("vision").shape[-1])
        self._neutral = {name: entry.as_array() for name, entry in card.uninformed_inputs.items()}

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def tokenizer_dir(self) -> Path:
        return self.path

    @classmethod
    def load(
        cls,
        path: str | Path,
        feature_spec: Mapping[str, Any] | None,
        *,
        providers: Sequence[str] = (CUDA, CPU),
        variant: GraphVariant = "auto",
        intra_op_threads: int = 0,
        intra_op_spinning: bool = False,
    ) -> ModelBundle:
        """Open a bundle for scoring features computed with `feature_spec` (None: offline use, no check)."""
        bundle_dir = Path(path)
        card = ModelCard.read(bundle_dir)
        if feature_spec is not None:
            check_live_use(bundle_dir, card, feature_spec)
        wanted = [p for p in providers if p in _available_providers()] or [CPU]
        choice = _choose_variant(card, variant, wanted)
        graph = card.graph if choice == "fp32" else card.variant(choice).graph  # type: ignore[union-attr]
        threads = (intra_op_threads, intra_op_spinning)
        with metrics.time_model_load(card.model_id):
            session = _session(verify_graph(bundle_dir, graph), wanted, threads)
            if choice == "fp16" and session.get_providers()[0] != CUDA and variant == "auto":
                log.warning("%s: CUDA did not start; using the fp32 graph on CPU instead of fp16", bundle_dir)
                fp32 = verify_graph(bundle_dir, card.graph)
                choice, session = "fp32", _session(fp32, [CPU], threads)
        bundle = cls(bundle_dir, card, session, choice)
        bundle._check_io()
        log.info(
            "model %s %s (%s graph) runs on %s (asked for %s)",
            card.model_id,
            card.model_version,
            choice,
            bundle.providers[0],
            ", ".join(providers),
        )
        return bundle

    def _check_io(self) -> None:
        """The graph takes only inputs of GRAPH_INPUTS (a model may leave some unread: MulT's lengths) and has
        each task's multimodal output. Unimodal outputs are optional: a model without those heads (LMF, TFN,
        MulT) has none, and its windows carry t/a/v as null."""
        recipe = self.card.audio_reference
        if recipe is not None and any(not 0 <= c < self._audio_dim for c in recipe.columns):
            raise ModelError(f"{self.path}: audio_reference columns {list(recipe.columns)} are outside the graph's "
                             f"{self._audio_dim} audio columns")
        unknown = [n for n in self.input_names if n not in INPUT_NAMES]
        if unknown:
            raise ModelError(f"{self.path}: graph takes inputs the agent does not compute: {', '.join(unknown)}")
        for task in self.card.tasks:
            if task.output not in self.output_names:
                raise ModelError(f"{self.path}: task {task.name} reads output {task.output!r}, not in graph")
            absent = [head for head, output in task.unimodal_outputs.items() if output not in self.output_names]
            if absent:
                log.info(
                    "%s: the graph has no %s output for task %s: published as null",
                    self.path,
                    "/".join(absent),
                    task.name,
                )

    def prepare(self, features: Any) -> ModelInputs:
        """Check one window's features against the card; substitute the neutral input where it says so."""
        ids = np.asarray(features.input_ids, dtype=np.int64).reshape(-1)
        if not 1 <= ids.shape[0] <= self.card.text_max_length:
            raise ModelError(
                f"text has {ids.shape[0]} tokens; the model takes 1..{self.card.text_max_length} "
                "(the feature extractor must truncate with the model's tokenizer)"
            )
        if ids.min() < 0 or ids.max() >= self.card.text_vocab_size:
            raise ModelError(
                f"token ids must be in 0..{self.card.text_vocab_size - 1} (the model's vocabulary), got "
                f"{ids.min()}..{ids.max()}: tokenised with another tokenizer than the bundle's?"
            )
        mask = np.asarray(features.attention_mask, dtype=np.int64).reshape(-1)
        types = np.asarray(features.token_type_ids, dtype=np.int64).reshape(-1)
        if mask.shape != ids.shape or types.shape != ids.shape:
            raise ModelError("input_ids, attention_mask and token_type_ids must have the same length")
        real = int(np.count_nonzero(mask))
        if mask[0] != 1 or not (mask[:real] == 1).all() or mask[real:].any():
            raise ModelError(
                "attention_mask must be 1 for the real tokens, from [CLS] on, then 0 (right padding); "
                f"got {mask.tolist()}"
            )
        audio = self._neutral.get("audio")
        if audio is None:
            audio = _frames(features.audio, self._audio_dim, "audio")
            recipe = self.card.audio_reference
            if recipe is not None:
                reference = getattr(features, "audio_reference", None)
                if reference is None:
                    reference = own_reference(audio)
                elif np.shape(reference) != (self._audio_dim,):
                    raise ModelError(f"audio_reference must be [{self._audio_dim}], got {np.shape(reference)}")
                audio = centred(audio, np.asarray(reference, np.float32), recipe.columns,
                                quiet_gate=recipe.quiet_gate)
                if recipe.trim_quiet_edges:
                    audio = without_quiet_edges(audio, recipe.quiet_edge_rows)
        vision = self._neutral.get("vision")
        if vision is None:
            vision = _frames(features.vision, self._vision_dim, "vision")
        return ModelInputs(ids, mask, types, audio, vision)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One blocking ONNX Runtime call (inputs padded up to the card's `min_lengths`); outputs by name, each
        float32 [B]."""
        padded = pad_to_min_lengths(feeds, self.card.min_lengths)
        values = self.session.run(list(self.output_names), {name: padded[name] for name in self.input_names})
        return {
            name: np.asarray(v, dtype=np.float32).reshape(-1) for name, v in zip(self.output_names, values, strict=True)
        }


def check_live_use(bundle_dir: Path, card: ModelCard, feature_spec: Mapping[str, Any]) -> None:
    """Refuse a bundle whose features the agent does not compute, saying what to change."""
    if card.feature_source != "live":
        raise ModelError(
            f"{bundle_dir}: model {card.model_id} was trained on MMSA dataset features "
            f"({card.live_scoring_note or 'not computable live'}); "
            "the agent cannot compute them from a call. "
            "Use it offline on MMSA pickles, or retrain on the agent's features (affectstream train)."
        )
    differences = card.audio_reference.differences() if card.audio_reference is not None else []
    if differences:
        raise ModelError(
            f"{bundle_dir}: model {card.model_id} reads the voice relative to a speaker reference taken another "
            f"way than this agent takes it ({'; '.join(differences)}): use an agent of the model's "
            "version, or re-export the model"
        )
    problems = feature_spec_mismatch(card.feature_spec, feature_spec)
    if problems:
        raise ModelError(
            f"{bundle_dir}: model {card.model_id} expects other features than this agent computes: "
            + "; ".join(problems)
            + ". Configure the agent's features to match the card, or export a model trained on these."
        )


def _frames(value: Any, dim: int, name: str) -> np.ndarray:
    frames = np.asarray(value, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[1] != dim:
        raise ModelError(f"{name} features must be [frames, {dim}], got shape {tuple(frames.shape)}")
    if frames.shape[0] < 1:
        raise ModelError(f"{name} features have 0 frames; the model needs at least 1")
    if not np.isfinite(frames).all():
        raise ModelError(f"{name} features contain NaN or infinity")
    return frames


def _available_providers() -> list[str]:
    return list(ort.get_available_providers())


def _choose_variant(card: ModelCard, variant: GraphVariant, providers: list[str]) -> str:
    if variant == "auto":
        return "fp16" if providers[0] == CUDA and card.variant("fp16") else "fp32"
    if variant != "fp32" and card.variant(variant) is None:
        have = ", ".join(["fp32", *(v.name for v in card.variants)])
        raise ModelError(f"bundle has no {variant} graph (it has {have}); set scoring.graph_variant")
    return variant


def _session(graph_path: Path, providers: list[str], threads: tuple[int, bool]) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads[0]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if threads[1] else "0")
    options.log_severity_level = 3  # CUDA fallback is reported by us, from get_providers()
    try:
        return ort.InferenceSession(str(graph_path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{graph_path}: ONNX Runtime cannot load the graph: {exc}") from None


def resolve_bundles(configured: list[Path], default: Path = DEFAULT_BUNDLE_DIR) -> list[Path]:
    """The configured bundles, or the default sentiment bundle (ModelError if it was never exported)."""
    if configured:
        return list(configured)
    if not (default / "card.json").is_file():
        raise ModelError(
            f"no model bundle configured and the default bundle {default} does not exist: run "
            "`affectstream model bundle` (or `make bundle`), or set scoring.bundles"
        )
    return [default]
