"""Benchmark: the default sentiment bundle vs VADER on the held-out test split of the rated corpus.

Table: corpus x {VADER (gold text), ours text, ours spoken} Pearson r against the human ratings.
- ours text: gold sentence + its espeak-ng speech (training voices) → FeatureExtractor → ONNX bundle
- ours spoken: a fixed seeded sample per corpus, spoken by held-out espeak-ng voices, through the real
  pipeline pieces: agent.windows (utterance mode, Silero VAD) → agent.speech (Whisper tiny.en) →
  core.features → agent.scoring (ONNX Runtime); a sentence's score is the duration-weighted mean of its
  windows. Acc-2 and pos/neg ranking accuracy are reported for the held-out voices.
- neutral readings: LJ Speech / LibriVox / JFK files from ../shared/data through the same pipeline.
- CREMA-D voices (bench/cremad_eval.py): real actors on the corpus's test actors through the replay path,
  r against the voice-only crowd valence, the audio ablation and two eGeMAPS anchors measured in the same
  run; `--live` adds actor 1001's six takes over WebRTC. Also written alone to bench/results/cremad.json,
  with the per-emotion chart bench/results/cremad_emotions.png.
VADER is measured in the same run on the same sentences. Writes bench/results/default_model.json.

    .venv/bin/python -m bench.default_model [--per-corpus 500] [--bundle DIR] [--variant fp32|int8]
    .venv/bin/python -m bench.default_model --cremad-only [--limit N] [--live]
    .venv/bin/python -m bench.default_model --no-cremad --audio-ablated   # M with every window's audio replaced
    .venv/bin/python -m bench.default_model --no-cremad --bundle NEW --baseline OLD   # both on the same transcripts
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agent.scoring import ModelBundle, Scorer
from agent.settings import ScoringSettings, SpeechSettings, WindowSettings
from agent.speech import SpeechRecognizer
from agent.vad import SileroVad
from agent.windows import Windower, windows_of
from bench._cpu import cpu_info
from bench.codec_shift import codec_shift, print_codec_shift
from bench.cremad_eval import CHART_FILE, print_cremad, run_cremad, write_chart
from bench.cremad_replay import Ablation, ablation_audio, with_audio
from core.card import DEFAULT_BUNDLE_DIR
from core.errors import AffectstreamError
from core.features import FeatureExtractor, FeatureSpec
from core.features_audio import audio_features, speech_ratio
from core.media import decode_file
from core.speaker_reference import SpeakerReferences
from core.types import SAMPLE_RATE_HZ, AudioChunk, Features, StreamId, TaskScore
from core.wer import word_error_rate
from default_model.build import non0_acc2, pearson, vader_scores
from default_model.corpus import (
    CORPORA,
    DEFAULT_SEED,
    RatedSentence,
    load_corpus,
    sample_per_corpus,
    split_corpus,
)
from default_model.cremad import DEFAULT_CREMAD_DIR
from default_model.dataset import MAX_SPEECH_S, transcript_of, window_of
from default_model.tts import HELDOUT_VOICES, TRAIN_VOICES, synthesize, voice_for

log = logging.getLogger("bench.default_model")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
CHUNK_S = 0.02  # what WebRTC delivers
PAD_S = 0.4  # silence around each synthetic sentence, so the VAD sees it start and end


def ranking_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of (positive, negative) sentence pairs that the scores put in the right order."""
    pos, neg = pred[true > 0], pred[true < 0]
    if not len(pos) or not len(neg):
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


class Pipeline:
    """The agent's pieces, loaded once: VAD, Whisper, feature extractor, scorer."""

    def __init__(self, bundle_dir: Path, variant: str = "fp32", *, audio_ablated: bool = False) -> None:
        card_spec = json.loads((bundle_dir / "card.json").read_text())["feature_spec"]
        self.spec = FeatureSpec.from_dict(card_spec)
        self.extractor = FeatureExtractor(self.spec, bundle_dir, use_vision=False)
        self.bundle = ModelBundle.load(
            bundle_dir, self.spec.to_dict(), providers=["CPUExecutionProvider"], variant=variant  # type: ignore[arg-type]
        )
        self.scorer = Scorer([self.bundle], ScoringSettings(max_batch=16, max_wait_ms=0.0))
        self.vad = SileroVad()
        self.speech = SpeechRecognizer(SpeechSettings(), words_needed=False)
        self.windows = WindowSettings()
        self.own_audio = False  # True: a baseline whose audio_highpass_hz differs from the bundle it is compared with
        # M of the rated sentences with the audio input replaced, as in the CREMA-D ablation: what the voice adds
        self.ablation: Ablation | None = ablation_audio(self.bundle.card) if audio_ablated else None

    async def score_task(self, features: Features) -> TaskScore:
        return (await self.scorer.score(features))[0]

    async def score(self, features: Features) -> float:
        if self.ablation is not None:
            features = with_audio(features, self.ablation.audio)
        return (await self.score_task(features)).m

    def own_features(self, features: Features, text: str | None = None) -> Features:
        """`features` as this bundle reads them: `text` (default: its transcript's) tokenized its own way, and, with
        `own_audio`, the window's audio through its own descriptors. A baseline may read transcripts through
        another text_normaliser, and audio through another audio_highpass_hz, than the bundle whose extractor
        made the features. The speaker reference attached to `features` is kept as it is: fit for a baseline
        whose card reads none (2.0.0), not for one that reads it relative to a reference of its own."""
        text = features.transcript.text if text is None else text
        ids, mask, types = self.extractor.tokenize(text)
        if self.own_audio:
            audio = audio_features(features.transcript.window.audio, self.spec.audio_highpass_hz)
            features = replace(features, audio=audio, speech_ratio=speech_ratio(audio))
        return replace(features, input_ids=ids, attention_mask=mask, token_type_ids=types)

    async def hear(self, name: str, items: Any) -> Heard:
        """One stream through windows → Whisper → features (with the speaker's running reference)."""
        stream = StreamId("bench", name)
        windows = windows_of(Windower(stream, self.windows, self.vad), items)
        references = SpeakerReferences()  # one speaker per stream, as the agent's pipeline keeps them
        heard = Heard(len(windows))
        for window in windows:
            transcript = await asyncio.to_thread(self.speech.transcribe, window)
            features = references.attach(stream.key, await asyncio.to_thread(self.extractor.extract, transcript))
            if transcript.text.strip():
                heard.spoken.append((features, window.duration_s))
                heard.texts.append(transcript.text)
        return heard

    async def score_heard(self, heard: Heard) -> float | None:
        """Duration-weighted mean M over the windows with words; None when none had words."""
        weight = sum(duration for _, duration in heard.spoken)
        if not weight:
            return None
        return sum([await self.score(self.own_features(f)) * duration for f, duration in heard.spoken]) / weight

    async def score_stream(self, name: str, items: Any) -> tuple[float | None, int, list[str]]:
        """(score, windows, texts) of one stream (`hear` then `score_heard`)."""
        heard = await self.hear(name, items)
        return await self.score_heard(heard), heard.windows, heard.texts


@dataclass(slots=True)
class Heard:
    """What the agent heard of one stream: its windows with words, as features with their durations."""

    windows: int
    spoken: list[tuple[Features, float]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def chunks_of(audio: np.ndarray) -> list[AudioChunk]:
    pad = np.zeros(int(PAD_S * SAMPLE_RATE_HZ), np.float32)
    samples = np.concatenate([pad, audio, pad])
    step = int(CHUNK_S * SAMPLE_RATE_HZ)
    return [AudioChunk(i / SAMPLE_RATE_HZ, samples[i: i + step]) for i in range(0, len(samples), step)]


def pickled_features(path: Path | None) -> dict[str, Features] | None:
    """The build's own test-split features (the same extract() output), to skip re-synthesising them."""
    if path is None or not path.is_file():
        return None
    from models.datasets import load_mmsa_pickle

    split = load_mmsa_pickle(path, ("test",))["test"]
    out = {}
    for i, sample_id in enumerate(split.ids):
        n_text = int(split.text_bert[i, 1].sum())
        rows = split.text_bert[i, :, :n_text].astype(np.int64)
        out[sample_id.replace("$_$", "/")] = Features(
            transcript=None,  # type: ignore[arg-type]  # the scorer reads only the arrays
            input_ids=rows[0], attention_mask=rows[1], token_type_ids=rows[2],
            audio=split.audio[i, : split.audio_lengths[i]], vision=split.vision[i, : split.vision_lengths[i]],
            speech_ratio=0.0, face_visible_ratio=0.0, latency_ms=0.0,
        )
    return out


async def text_path(
    pipe: Pipeline, sentences: list[RatedSentence], cached: dict[str, Features] | None
) -> np.ndarray:
    """Gold text + training-voice speech through the extractor (or the build's copy) and the ONNX scorer."""
    out = []
    for s in sentences:
        # a baseline that reads audio its own way cannot use the build's copy: it holds no raw audio
        if cached and s.key in cached and not pipe.own_audio:
            features = pipe.own_features(cached[s.key], s.text)
        else:
            audio = synthesize(s.text, voice_for(s.key, TRAIN_VOICES))[: int(MAX_SPEECH_S * SAMPLE_RATE_HZ)]
            features = pipe.extractor.extract(transcript_of(window_of(audio), s.text))
        out.append(await pipe.score(features))
    return np.asarray(out)


async def spoken_path(
    pipe: Pipeline, sentences: list[RatedSentence], baseline: Pipeline | None = None
) -> tuple[np.ndarray, list[str], dict[str, int], np.ndarray | None]:
    """Held-out voices → windows → Whisper → features → scorer; no words at all scores 0 (counted).
    Returns the scores, what Whisper heard per sentence, counts, and the baseline bundle's scores of the very same
    windows and transcripts (None without one)."""
    out, base, heard, stats = [], [], [], {"windows": 0, "no_words": 0}
    for i, s in enumerate(sentences):
        audio = synthesize(s.text, voice_for(s.key, HELDOUT_VOICES))
        windows = await pipe.hear(f"s{i}", chunks_of(audio))
        score = await pipe.score_heard(windows)
        stats["windows"] += windows.windows
        if score is None:
            stats["no_words"] += 1
        out.append(0.0 if score is None else score)
        if baseline is not None:
            base_score = await baseline.score_heard(windows)
            base.append(0.0 if base_score is None else base_score)
        heard.append(" ".join(windows.texts))
        if (i + 1) % 100 == 0:
            log.info("spoken path: %d/%d sentences", i + 1, len(sentences))
    return np.asarray(out), heard, stats, (np.asarray(base) if baseline is not None else None)


def paired_r_difference(pred: np.ndarray, base: np.ndarray, true: np.ndarray, *, resamples: int = 2000,
                        seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """r(pred) − r(base) against `true` on the same items, with a 95 % paired-bootstrap interval (items resampled
    together, so what both models share, such as Whisper's errors, does not widen it)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        rows = rng.integers(0, len(true), len(true))
        diffs.append(pearson(pred[rows], true[rows]) - pearson(base[rows], true[rows]))
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return {"difference": round(pearson(pred, true) - pearson(base, true), 4),
            "ci95": [round(float(low), 4), round(float(high), 4)]}


async def neutral_readings(pipe: Pipeline) -> list[dict[str, Any]]:
    rows = []
    with (SHARED / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] != "speech":
                continue
            score, n_windows, _ = await pipe.score_stream(Path(row["path"]).stem[:60],
                                                          decode_file(SHARED / row["path"]))
            vader = float(vader_scores([row["transcript"]])[0])
            rows.append({"path": row["path"], "windows": n_windows, "ours": score, "vader_compound": vader})
    return rows


def corpus_rows(test: list[RatedSentence], text_pred: np.ndarray, sample: list[RatedSentence],
                spoken_pred: np.ndarray, heard: list[str],
                baseline: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Per corpus: r of ours and VADER on the gold text and through speech; with `baseline` (its text and spoken
    predictions of the same items), its r and ours minus its with a paired-bootstrap interval."""
    vader_all = vader_scores([s.text for s in test])
    index = {s.key: i for i, s in enumerate(test)}
    table: dict[str, Any] = {}
    for corpus in CORPORA:
        rows = [i for i, s in enumerate(test) if s.corpus == corpus]
        y = np.asarray([test[i].label for i in rows])
        srows = [j for j, s in enumerate(sample) if s.corpus == corpus]
        sy = np.asarray([sample[j].label for j in srows])
        sidx = [index[sample[j].key] for j in srows]
        spoken = spoken_pred[srows]
        entry = {
            "n_test": len(rows), "vader_r": pearson(vader_all[rows], y),
            "ours_text_r": pearson(text_pred[rows], y),
            "n_spoken": len(srows), "ours_spoken_r": pearson(spoken, sy) if len(srows) > 2 else float("nan"),
            "sample_vader_r": pearson(vader_all[sidx], sy) if len(srows) > 2 else float("nan"),
            "sample_ours_text_r": pearson(text_pred[sidx], sy) if len(srows) > 2 else float("nan"),
            "spoken_acc2": non0_acc2(spoken, sy) if len(srows) else float("nan"),
            "sample_vader_acc2": non0_acc2(vader_all[sidx], sy) if len(srows) else float("nan"),
            "spoken_pos_neg_ranking": ranking_accuracy(spoken, sy) if len(srows) else float("nan"),
            "spoken_wer": (word_error_rate([sample[j].text for j in srows], [heard[j] for j in srows])
                           if len(srows) else float("nan")),
        }
        entry["text_vs_vader_ratio"] = entry["ours_text_r"] / entry["vader_r"]
        entry["spoken_vs_vader_ratio"] = entry["ours_spoken_r"] / entry["sample_vader_r"]
        if baseline is not None and len(srows) > 2:
            base_text, base_spoken = baseline[0][rows], baseline[1][srows]
            entry["baseline_text_r"] = pearson(base_text, y)
            entry["baseline_spoken_r"] = pearson(base_spoken, sy)
            entry["text_minus_baseline"] = paired_r_difference(text_pred[rows], base_text, y)
            entry["spoken_minus_baseline"] = paired_r_difference(spoken, base_spoken, sy)
        table[corpus] = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
    return table


def print_table(table: dict[str, Any]) -> None:
    head = f"{'corpus':<14}{'n':>6}{'VADER r':>9}{'ours text':>11}{'n spk':>7}{'VADER r*':>10}"
    head += f"{'spoken r':>10}"
    print(head + f"{'Acc-2 spk':>11}{'rank spk':>10}{'WER spk':>9}")
    for corpus, e in table.items():
        print(f"{corpus:<14}{e['n_test']:>6}{e['vader_r']:>9.3f}{e['ours_text_r']:>11.3f}{e['n_spoken']:>7}"
              f"{e['sample_vader_r']:>10.3f}{e['ours_spoken_r']:>10.3f}{e['spoken_acc2']:>11.3f}"
              f"{e['spoken_pos_neg_ranking']:>10.3f}{e['spoken_wer']:>9.3f}")
    print("VADER r* = VADER on the spoken sample's gold text (the spoken column's baseline)")
    for corpus, e in table.items():
        if "spoken_minus_baseline" in e:
            t, sp = e["text_minus_baseline"], e["spoken_minus_baseline"]
            print(f"{corpus:<14} baseline text r {e['baseline_text_r']:.3f} (ours {t['difference']:+.3f}, 95 % "
                  f"{t['ci95'][0]:+.3f}..{t['ci95'][1]:+.3f}), spoken r {e['baseline_spoken_r']:.3f} (ours "
                  f"{sp['difference']:+.3f}, 95 % {sp['ci95'][0]:+.3f}..{sp['ci95'][1]:+.3f})")


def baseline_beside(pipe: Pipeline, baseline_dir: Path, variant: str = "fp32") -> Pipeline:
    """The --baseline bundle, to be scored on the features `pipe`'s extractor computes: its own tokens from the
    same transcripts and, where its audio filter differs, its own descriptors of the same windows."""
    baseline = Pipeline(baseline_dir, variant)
    baseline.own_audio = baseline.spec.audio_highpass_hz != pipe.spec.audio_highpass_hz
    read_alike = replace(baseline.spec, text_normaliser=pipe.spec.text_normaliser,
                         audio_highpass_hz=pipe.spec.audio_highpass_hz)
    if read_alike != pipe.spec:
        raise AffectstreamError(f"--baseline {baseline_dir} reads other features than the bundle it is compared with "
                                f"({pipe.bundle.card.model_version}; their cards' feature_spec differ): the two "
                                "cannot be scored on the same windows")
    return baseline


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    pipe = Pipeline(args.bundle, args.variant, audio_ablated=args.audio_ablated)
    pipe.scorer.start()
    try:
        baseline = baseline_beside(pipe, args.baseline, args.variant) if args.baseline else None
    except AffectstreamError:
        await pipe.scorer.close()
        raise
    if baseline is not None:
        baseline.scorer.start()
    try:
        test = split_corpus(load_corpus(args.cache), seed=DEFAULT_SEED)["test"]
        if args.text_per_corpus:
            test = sample_per_corpus(test, args.text_per_corpus, seed=args.seed)
        sample = sample_per_corpus(test, args.per_corpus, seed=args.seed)
        mark = time.perf_counter()
        cached = pickled_features(args.features_pickle)
        text_pred = await text_path(pipe, test, cached)
        base_text = None if baseline is None else await text_path(baseline, test, cached)
        text_s = time.perf_counter() - mark
        mark = time.perf_counter()
        spoken_pred, heard, stats, base_spoken = await spoken_path(pipe, sample, baseline)
        spoken_s = time.perf_counter() - mark
        speech = bool(sample) and SHARED.is_dir()  # --per-corpus 0: the text path alone
        neutral = await neutral_readings(pipe) if speech else []
        shift = await codec_shift(pipe, SHARED) if speech else None
    finally:
        await pipe.scorer.close()
        if baseline is not None:
            await baseline.scorer.close()
    both = None if base_text is None or base_spoken is None else (base_text, base_spoken)
    table = corpus_rows(test, text_pred, sample, spoken_pred, heard, both)
    return {
        "bundle": str(args.bundle), "model_version": pipe.bundle.card.model_version, "device": "cpu",
        "cpu": cpu_info().line(), "audio_ablated": None if pipe.ablation is None else pipe.ablation.source,
        "graph": pipe.bundle.graph_name,
        "baseline": None if baseline is None else {"bundle": str(args.baseline),
                                                   "model_version": baseline.bundle.card.model_version},
        "per_corpus_spoken": args.per_corpus, "seed": args.seed, "table": table,
        "spoken_stats": stats, "heldout_voices": sorted({v.name for v in HELDOUT_VOICES}),
        **(_spoken_summary(sample, spoken_pred, heard) if sample else {}),
        "neutral_readings": neutral,
        "call_codec_shift": shift,
        "seconds": {"text_path": round(text_s, 1), "spoken_path": round(spoken_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
    }


def _spoken_summary(sample: list[RatedSentence], spoken_pred: np.ndarray, heard: list[str]) -> dict[str, float]:
    labels = np.asarray([s.label for s in sample])
    return {"spoken_wer_all": round(word_error_rate([s.text for s in sample], heard), 4),
            "acc2_heldout_voices_all": round(non0_acc2(spoken_pred, labels), 4),
            "ranking_heldout_voices_all": round(ranking_accuracy(spoken_pred, labels), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, default=ROOT / DEFAULT_BUNDLE_DIR)
    parser.add_argument("--variant", choices=["fp32", "int8"], default="fp32", help="which graph of the bundle")
    parser.add_argument("--per-corpus", type=int, default=500,
                        help="spoken sample per corpus (test split); 0: the text path alone (no speech, neutral "
                             "readings or codec bench)")
    parser.add_argument("--text-per-corpus", type=int, default=0, help="limit the text path (0 = all)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--features-pickle", type=Path,
                        default=ROOT / ".affectstream" / "build" / "default-model" / "vader_espeak.pkl",
                        help="reuse the build's test-split features when present (else synthesise them)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".affectstream" / "cache" / "vader")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "default_model.json")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another bundle scored in the same run on the same windows and transcripts (e.g. "
                             "the default it would replace): its r, and ours minus its with a 95 %% paired "
                             "bootstrap interval")
    parser.add_argument("--cremad-only", action="store_true", help="only the CREMA-D section (cremad.json)")
    parser.add_argument("--no-cremad", action="store_true", help="skip the CREMA-D section")
    parser.add_argument("--audio-ablated", action="store_true",
                        help="score the rated sentences and neutral readings with every window's audio replaced by "
                             "the card's uninformed row, else 1 s of silence (the call-codec section is unchanged)")
    parser.add_argument(
        "--cremad-limit",
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="CREMA-D: a seeded sample of N clips per split (default: all)",
    )
    parser.add_argument(
        "--live", action="store_true", help="CREMA-D: also stream actor 1001's six takes over WebRTC to the server"
    )
    parser.add_argument("--cremad-dir", type=Path, default=DEFAULT_CREMAD_DIR)
    parser.add_argument("--cremad-out", type=Path, default=ROOT / "bench" / "results" / "cremad.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("agent.pipeline").setLevel(logging.WARNING)  # else a "stream ended" line per CREMA-D clip
    try:
        cremad = None if args.no_cremad else asyncio.run(run_cremad(
            args.bundle, args.cremad_dir, ROOT / ".affectstream" / "cache", variant=args.variant,
            limit=args.cremad_limit, live=args.live, seed=args.seed,
        ))  # fmt: skip
        result = None if args.cremad_only else asyncio.run(run(args))
    except AffectstreamError as exc:
        raise SystemExit(f"error: {exc}") from None
    if cremad is not None:
        print_cremad(cremad)
        args.cremad_out.parent.mkdir(parents=True, exist_ok=True)
        args.cremad_out.write_text(json.dumps(cremad, indent=2) + "\n")
        write_chart(cremad, args.cremad_out.parent / CHART_FILE)
        print(f"wrote {args.cremad_out} and {args.cremad_out.parent / CHART_FILE}")
    if result is None:
        return
    result["cremad"] = cremad
    print_table(result["table"])
    if "acc2_heldout_voices_all" in result:
        print(f"held-out voices: Acc-2 {result['acc2_heldout_voices_all']:.3f}, "
              f"pos/neg ranking {result['ranking_heldout_voices_all']:.3f}")
    for row in result["neutral_readings"]:
        print(f"neutral {row['path']}: ours {row['ours']}, VADER compound {row['vader_compound']:.3f}")
    if result["call_codec_shift"] is not None:
        print_codec_shift(result["call_codec_shift"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
