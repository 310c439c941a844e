"""`affectstream model build`: the default sentiment model from scratch, offline and reproducibly.

corpus (vaderSentiment sdist) → seeded split → espeak-ng speech → FeatureExtractor.extract (the agent's own
call) → MMSA pickle → Trainer (Self-MM + ULGM, MMSA's mosi preset, text encoder fine-tuned) → best epoch
→ test-split quality per corpus beside VADER → default_model/committed/ (small artefacts) → the default bundle.

Deviation from MMSA's config_regression (use_finetune=true, every encoder layer): only the top
FINETUNE_TOP_LAYERS of the 6 MiniLM layers train; the embeddings and lower layers stay as shipped. That keeps
the build within 45 minutes on 2 cores and the committed weights small (float16, see default_model).
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from core.card import DEFAULT_BUNDLE_DIR
from core.features import FeatureExtractor, FeatureSpec
from default_model.artefacts import (
    DEFAULT_DIR,
    ENCODER_WEIGHTS,
    TEXT_ENCODER_PACKAGE,
    export_default_bundle,
    file_sha256,
    round_trained_encoder,
    save_default,
)
from default_model.corpus import (
    CORPORA,
    DEFAULT_SEED,
    VADER_VERSION,
    RatedSentence,
    load_corpus,
    sample_per_corpus,
    split_corpus,
)
from default_model.dataset import MAX_SPEECH_S, build_pickle
from default_model.tts import HELDOUT_VOICES, TRAIN_VOICES
from models.config import SelfMMConfig, default_text_encoder_dir
from models.datasets import MMSADataset, load_mmsa_pickle
from models.selfmm import SelfMM
from models.train import Trainer, TrainOptions, load_best, setup_seed

log = logging.getLogger(__name__)

NOT_CLINICAL = "Not a clinical instrument: a research and monitoring aid; never use it for diagnosis."
MODEL_VERSION = "2.0.0"
FINETUNE_TOP_LAYERS = 2


@dataclass(frozen=True, slots=True)
class BuildOptions:
    out_dir: Path = DEFAULT_DIR
    bundle_dir: Path = DEFAULT_BUNDLE_DIR
    work_dir: Path = Path(".affectstream") / "build" / "default-model"
    cache_dir: Path = Path(".affectstream") / "cache" / "vader"
    spoken_per_corpus: int | None = 1000  # per corpus, in train and valid; None = every sentence
    sentences_per_corpus: int | None = None  # per corpus and split (smoke runs); None = the whole corpus
    max_epochs: int = 4
    seed: int = DEFAULT_SEED
    workers: int = 2
    export: bool = True
    progress: bool = True  # a bar with ETA per phase on stderr (core.progress)


@dataclass(slots=True)
class BuildReport:
    out_dir: Path
    bundle_dir: Path | None
    quality: dict[str, Any]
    counts: dict[str, dict[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(x, np.float64), np.asarray(y, np.float64))[0, 1])


def non0_acc2(pred: np.ndarray, true: np.ndarray) -> float:
    """MMSA's Non0_acc_2: sign agreement on sentences whose rating is not 0."""
    keep = true != 0
    return float(np.mean((pred[keep] > 0) == (true[keep] > 0)))


def vader_scores(texts: list[str]) -> np.ndarray:
    """VADER compound (vaderSentiment, the same version as the corpus) for each text."""
    analyzer = SentimentIntensityAnalyzer()
    return np.asarray([analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def quality_by_corpus(test: list[RatedSentence], pred_by_key: dict[str, float]) -> dict[str, Any]:
    """Pearson r and Non0 Acc-2 of ours and VADER per corpus on the test split (gold text)."""
    vader = vader_scores([s.text for s in test])
    table: dict[str, Any] = {}
    for corpus in CORPORA:
        rows = [i for i, s in enumerate(test) if s.corpus == corpus]
        true = np.asarray([test[i].label for i in rows])
        ours = np.asarray([pred_by_key[test[i].key] for i in rows])
        table[corpus] = {
            "n": len(rows),
            "pearson_ours": round(pearson(ours, true), 4),
            "pearson_vader": round(pearson(vader[rows], true), 4),
            "acc2_ours": round(non0_acc2(ours, true), 4),
            "acc2_vader": round(non0_acc2(vader[rows], true), 4),
            "mae_ours": round(float(np.mean(np.abs(ours - true))), 4),
        }
    return table


def _train(options: BuildOptions, pickle_path: Path, spec_dims: tuple[int, int]) -> tuple[Any, Any, Any, Any]:
    torch.set_num_threads(max(1, options.workers))
    data = load_mmsa_pickle(pickle_path)
    config = SelfMMConfig.preset("mosi", audio_dim=spec_dims[0], vision_dim=spec_dims[1], task="sentiment",
                                 use_finetune=True, finetune_top_layers=FINETUNE_TOP_LAYERS)
    setup_seed(options.seed)
    model = SelfMM(config)
    trainer = Trainer(config, TrainOptions(max_epochs=options.max_epochs, device="cpu", progress=options.progress,
                                           trim_padding=True))
    result = trainer.fit(model, MMSADataset(data["train"]), MMSADataset(data["valid"]))
    load_best(model, result)
    round_trained_encoder(model)  # what is committed: the test quality below is the committed model's
    test_out = trainer.predict(model, MMSADataset(data["test"]), desc="test")
    return model, config, result, test_out


def build(options: BuildOptions) -> BuildReport:
    """Run every step; writes options.out_dir and (unless export=False) the default bundle."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    sentences = load_corpus(options.cache_dir)
    splits = split_corpus(sentences, seed=options.seed)
    if options.sentences_per_corpus is not None:
        splits = {name: sample_per_corpus(part, options.sentences_per_corpus, seed=options.seed)
                  for name, part in splits.items()}
    encoder_dir = default_text_encoder_dir()
    spec = FeatureSpec.for_tokenizer(encoder_dir)
    extractor = FeatureExtractor(spec, encoder_dir, use_vision=False)
    pickle_path = options.work_dir / "vader_espeak.pkl"
    counts = build_pickle(splits, extractor, pickle_path, spoken_per_corpus=options.spoken_per_corpus,
                          seed=options.seed, workers=options.workers, progress=options.progress)
    seconds["corpus_tts_features"] = round(time.perf_counter() - started, 1)

    mark = time.perf_counter()
    model, config, result, test_out = _train(options, pickle_path, (spec.audio_dim, spec.vision_dim))
    seconds["train"] = round(time.perf_counter() - mark, 1)
    keys = [i.replace("$_$", "/") for i in test_out["ids"]]
    pred_by_key = dict(zip(keys, (float(p) for p in test_out["pred"]), strict=True))
    quality = {"test_split_gold_text": quality_by_corpus(splits["test"], pred_by_key)}

    facts = _facts(options, spec.to_dict(), counts, result, quality, encoder_dir, MAX_SPEECH_S)
    save_default(model, config, facts, options.out_dir)
    bundle_dir = None
    if options.export:
        mark = time.perf_counter()
        bundle_dir, _ = export_default_bundle(options.bundle_dir, options.out_dir, force=True)
        seconds["export"] = round(time.perf_counter() - mark, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    log.info("default model built in %.0f s: %s", seconds["total"], seconds)
    return BuildReport(options.out_dir, bundle_dir, quality, counts, seconds)


def _facts(
    options: BuildOptions, spec: dict[str, Any], counts: dict[str, dict[str, int]], result: Any,
    quality: dict[str, Any], encoder_dir: Path, max_speech_s: float,
) -> dict[str, Any]:
    return {
        "model_version": MODEL_VERSION,
        "task": "sentiment",
        "label_range": [-3.0, 3.0],
        "intended_use": NOT_CLINICAL,
        "feature_spec": spec,
        "text_encoder": {
            "package": TEXT_ENCODER_PACKAGE,
            "version": metadata.version(TEXT_ENCODER_PACKAGE),
            "weights_sha256": file_sha256(encoder_dir / ENCODER_WEIGHTS),
            "frozen": False,
            "fine_tuned_top_layers": FINETUNE_TOP_LAYERS,
        },
        "training": {
            "data": (f"human-rated sentences of vaderSentiment=={VADER_VERSION} (sdist, additional_resources/"
                     "hutto_ICWSM_2014): mean of ~20 raters on -4..+4, rescaled x3/4 to -3..3"),
            "corpora": list(CORPORA),
            "split": "seeded 80/10/10 per corpus (default_model.corpus.split_corpus)",
            "seed": options.seed,
            "counts": counts,
            "spoken_per_corpus": options.spoken_per_corpus,
            "sentences_per_corpus": options.sentences_per_corpus,
            "text": "gold sentences (the rated text), tokenized by the agent's FeatureExtractor",
            "audio": (f"espeak-ng synthetic speech only ({len(TRAIN_VOICES)} voice/rate/pitch combinations, "
                      f"cut at {max_speech_s:g} s) through the agent's audio features; sentences not spoken "
                      "carry the speech of another sentence of their corpus and split"),
            "vision": "not informed: no labelled faces; always the explicit 'no face' row",
            "preset": (f"MMSA self_mm mosi (config_regression, use_finetune=true) with only the top "
                       f"{FINETUNE_TOP_LAYERS} encoder layers trained"),
            "deviation": (f"MMSA fine-tunes every encoder layer; here the embeddings and the lower "
                          f"{6 - FINETUNE_TOP_LAYERS} layers stay as shipped (2-core build time), and the "
                          "fine-tuned layers are committed as float16 (the quality is measured after rounding); "
                          "training batches are cut to their longest sentence (same outputs, other dropout "
                          "draws than MMSA's padded batches)"),
            "max_epochs": options.max_epochs,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs,
            "best_valid": result.best_valid,
            "train_voices": sorted({v.name for v in TRAIN_VOICES}),
            "heldout_voices": sorted({v.name for v in HELDOUT_VOICES}),
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
        },
        "quality": quality,
        "note": ("Trained on written sentences spoken by espeak-ng: it reads sentiment mostly from the "
                 "words; "
                 "vision is fed the 'no face' row; " + NOT_CLINICAL),
    }


def options_dict(options: BuildOptions) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
