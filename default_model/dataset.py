"""The default model's training set: rated sentences, spoken by espeak-ng, through the agent's feature path.

Each sentence becomes one MMSA sample: its gold text tokenized by the model's tokenizer, the acoustic
descriptors of its synthetic speech, and the explicit "no face" vision row (no labelled faces exist here).
Every sample goes through `FeatureExtractor.extract`, the very call the agent makes on a live window.

When the spoken part is subsampled (`spoken_per_corpus`), a sentence that was not spoken gets the speech of
another sentence of the same corpus and split (a fixed seeded pairing): its audio then carries no information
about its label, which teaches the model that espeak-ng's flat prosody says nothing about sentiment.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.features import FeatureExtractor
from core.progress import progress_bar
from core.splits import SPLITS, Split
from core.types import SAMPLE_RATE_HZ, Features, StreamId, Transcript, Window
from default_model.corpus import RatedSentence, sample_per_corpus
from default_model.cremad import VoiceSample
from default_model.tts import TRAIN_VOICES, TTSError, Voice, synthesize, voice_for

log = logging.getLogger(__name__)

MAX_SPEECH_S = 10.0  # MOSI's 500 audio frames; longer speech is cut (its text is kept up to the token limit)
_STREAM = StreamId("default-model-build", "tts")


@dataclass(frozen=True, slots=True)
class SpokenSentence:
    sentence: RatedSentence
    voice: Voice
    features: Features


def window_of(audio: np.ndarray, seq: int = 0) -> Window:
    """A whole synthetic utterance as one agent window (no video frames)."""
    return Window(_STREAM, seq, 0.0, len(audio) / SAMPLE_RATE_HZ, audio, (), "utterance")


def transcript_of(window: Window, text: str) -> Transcript:
    """A transcript carrying the gold text (training uses the rated sentence, not an ASR guess)."""
    return Transcript(window=window, text=text, words=(), language="en", no_speech_prob=0.0, latency_ms=0.0)


def speak_and_extract(
    sentence: RatedSentence, extractor: FeatureExtractor, voices: Sequence[Voice] = TRAIN_VOICES
) -> SpokenSentence:
    """TTS one sentence with its fixed voice and extract features exactly as the agent does."""
    voice = voice_for(sentence.key, voices)
    audio = synthesize(sentence.text, voice)[: int(MAX_SPEECH_S * SAMPLE_RATE_HZ)]
    features = extractor.extract(transcript_of(window_of(audio), sentence.text))
    return SpokenSentence(sentence, voice, features)


def _try_speak(sentence: RatedSentence, extractor: FeatureExtractor) -> SpokenSentence | None:
    try:
        return speak_and_extract(sentence, extractor)
    except TTSError as exc:  # counted by the caller; the sentence is then paired like an unspoken one
        log.warning("sentence %s not spoken: %s", sentence.key, exc)
        return None


def speak_all(
    sentences: Sequence[RatedSentence],
    extractor: FeatureExtractor,
    *,
    workers: int = 2,
    desc: str = "speech + features",
    progress: bool = False,
) -> list[SpokenSentence]:
    """speak_and_extract over many sentences, `workers` at a time, in input order, with a progress bar.

    A sentence espeak-ng cannot speak is left out (and logged), never silently replaced.
    """

    started = time.perf_counter()
    results: list[SpokenSentence] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        spoken = pool.map(lambda s: _try_speak(s, extractor), sentences)
        for item in progress_bar(spoken, desc=desc, total=len(sentences), unit="sentence", enabled=progress):
            if item is not None:
                results.append(item)
    log.info("spoke %d sentences in %.0f s", len(results), time.perf_counter() - started)
    return results


def pair_unspoken(
    sentences: Sequence[RatedSentence], spoken: dict[str, Features], *, seed: int
) -> dict[str, str]:
    """sentence key -> key whose audio it uses: itself when spoken, else a seeded same-corpus partner."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[str]] = {}
    for s in sentences:
        if s.key in spoken:
            pools.setdefault(s.corpus, []).append(s.key)
    pairing: dict[str, str] = {}
    for s in sentences:
        if s.key in spoken:
            pairing[s.key] = s.key
        else:
            pool = pools.get(s.corpus)
            if not pool:
                raise ValueError(f"corpus {s.corpus} has no spoken sentence to pair with in this split")
            pairing[s.key] = pool[int(rng.integers(len(pool)))]
    return pairing


def mmsa_split(
    sentences: Sequence[RatedSentence],
    spoken: dict[str, Features],
    pairing: dict[str, str],
    text_max_length: int,
    extractor: FeatureExtractor,
) -> dict[str, object]:
    """One split in MMSA's pickle schema (docs/selfmm.md §6), zero-padded to the split's longest sequence."""
    n = len(sentences)
    audio_list = [spoken[pairing[s.key]].audio for s in sentences]
    vision_list = [spoken[pairing[s.key]].vision for s in sentences]
    max_a = max(a.shape[0] for a in audio_list)
    max_v = max(v.shape[0] for v in vision_list)
    audio = np.zeros((n, max_a, audio_list[0].shape[1]), dtype=np.float32)
    vision = np.zeros((n, max_v, vision_list[0].shape[1]), dtype=np.float32)
    text_bert = np.zeros((n, 3, text_max_length), dtype=np.float32)
    for i, s in enumerate(sentences):
        audio[i, : audio_list[i].shape[0]] = audio_list[i]
        vision[i, : vision_list[i].shape[0]] = vision_list[i]
        own = spoken.get(s.key)
        if own is not None:
            ids, mask, types = own.input_ids, own.attention_mask, own.token_type_ids
        else:  # the same tokenizer call FeatureExtractor.extract makes
            ids, mask, types = extractor.tokenize(s.text)
        text_bert[i, 0, : len(ids)] = ids
        text_bert[i, 1, : len(mask)] = mask
        text_bert[i, 2, : len(types)] = types
    labels = np.asarray([s.label for s in sentences], dtype=np.float32)
    return {
        "raw_text": [s.text for s in sentences],
        "id": [f"{s.corpus}$_${s.sentence_id}" for s in sentences],
        "text_bert": text_bert,
        "audio": audio,
        "vision": vision,
        "audio_lengths": [int(a.shape[0]) for a in audio_list],
        "vision_lengths": [int(v.shape[0]) for v in vision_list],
        "annotations": ["Positive" if y > 0 else "Negative" if y < 0 else "Neutral" for y in labels],
        "regression_labels": labels,
        "audio_paired_from": [pairing[s.key] for s in sentences],  # ours: which sentence's speech is used
    }


def build_pickle(
    splits: dict[Split, list[RatedSentence]],
    extractor: FeatureExtractor,
    path: Path,
    *,
    spoken_per_corpus: int | None,
    seed: int,
    workers: int = 2,
    progress: bool = False,
    voices: dict[Split, list[VoiceSample]] | None = None,
    voice_repeat: int = 1,
) -> dict[str, dict[str, int]]:
    """Write the MMSA pickle; returns per split and corpus how many sentences were used and spoken.

    `voices`: CREMA-D samples appended to each split (train rows `voice_repeat` times; valid and test once).
    """
    data: dict[str, object] = {}
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        sentences = splits[split]
        chosen = sentences if spoken_per_corpus is None or split == "test" else sample_per_corpus(
            sentences, spoken_per_corpus, seed=seed
        )
        log.info("%s: speaking %d of %d sentences", split, len(chosen), len(sentences))
        items = speak_all(chosen, extractor, workers=workers, desc=f"{split}: speech + features", progress=progress)
        spoken = {item.sentence.key: item.features for item in items}
        pairing = pair_unspoken(sentences, spoken, seed=seed)
        data[split] = mmsa_split(sentences, spoken, pairing, extractor.spec.text_max_length, extractor)
        if voices and voices.get(split):
            repeat = voice_repeat if split == "train" else 1
            data[split] = append_voices(data[split], voices[split], repeat=repeat)  # type: ignore[arg-type]
            counts[f"{split}/cremad"] = {"clips": len({v.clip.name for v in voices[split]}),
                                         "rows": len(voices[split]) * repeat}
        for s in sentences:
            entry = counts.setdefault(f"{split}/{s.corpus}", {"sentences": 0, "spoken": 0})
            entry["sentences"] += 1
            entry["spoken"] += int(s.key in spoken)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    log.info("wrote %s (%.0f MB)", path, path.stat().st_size / 1e6)
    return counts


VOICE_ID_PREFIX = "cremad"  # MMSA id of a CREMA-D clip: "cremad$_$<clip name>"


def append_voices(split: dict[str, object], voices: Sequence[VoiceSample], *, repeat: int = 1) -> dict[str, object]:
    """`split` (mmsa_split's schema) with the CREMA-D samples appended, each `repeat` times, re-padded.

    Repeating a source is how the build weights it per epoch (ULGM keeps one label slot per row, so a
    repeated clip simply has several slots).
    """
    if not voices:
        return split
    rows = [v for v in voices for _ in range(max(1, repeat))]
    old_audio = np.asarray(split["audio"])
    old_vision = np.asarray(split["vision"])
    old_text = np.asarray(split["text_bert"])
    n_old, n_new = old_audio.shape[0], len(rows)
    max_a = max(old_audio.shape[1], max(v.audio.shape[0] for v in rows))
    max_v = max(old_vision.shape[1], max(v.vision.shape[0] for v in rows))
    audio = np.zeros((n_old + n_new, max_a, old_audio.shape[2]), dtype=np.float32)
    vision = np.zeros((n_old + n_new, max_v, old_vision.shape[2]), dtype=np.float32)
    text = np.zeros((n_old + n_new, *old_text.shape[1:]), dtype=np.float32)
    audio[:n_old, : old_audio.shape[1]] = old_audio
    vision[:n_old, : old_vision.shape[1]] = old_vision
    text[:n_old] = old_text
    for i, v in enumerate(rows, start=n_old):
        audio[i, : v.audio.shape[0]] = v.audio
        vision[i, : v.vision.shape[0]] = v.vision
        for channel, values in enumerate((v.input_ids, v.attention_mask, v.token_type_ids)):
            text[i, channel, : len(values)] = values
    labels = np.concatenate([np.asarray(split["regression_labels"], np.float32),
                             np.asarray([v.label for v in rows], np.float32)])
    return {
        "raw_text": [*split["raw_text"], *(v.text for v in rows)],  # type: ignore[misc]
        "id": [*split["id"], *(f"{VOICE_ID_PREFIX}$_${v.name}" for v in rows)],  # type: ignore[misc]
        "text_bert": text,
        "audio": audio,
        "vision": vision,
        "audio_lengths": [*split["audio_lengths"], *(int(v.audio.shape[0]) for v in rows)],  # type: ignore[misc]
        "vision_lengths": [*split["vision_lengths"], *(int(v.vision.shape[0]) for v in rows)],  # type: ignore[misc]
        "annotations": ["Positive" if y > 0 else "Negative" if y < 0 else "Neutral" for y in labels],
        "regression_labels": labels,
        # the voices' human audio label (the voice-only raters'); NaN: none (ULGM generates it)
        "regression_labels_A": np.concatenate([
            np.asarray(split.get("regression_labels_A", np.full(n_old, np.nan)), np.float32),
            np.asarray([v.label for v in rows], np.float32)]),
        "audio_paired_from": [*split["audio_paired_from"], *(v.name for v in rows)],  # type: ignore[misc]
        # ours: a voice's text (one of twelve neutral sentences) says nothing of its label
        "text_labelled": np.concatenate([np.asarray(split.get("text_labelled", np.ones(n_old, bool)), bool),
                                         np.zeros(n_new, bool)]),
    }


def audio_statistics(audio: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of padded audio [N, T, D] over each row's valid frames (float64 [D] each)."""
    valid = np.arange(audio.shape[1])[None, :] < lengths[:, None]
    frames = audio[valid].astype(np.float64)
    return frames.mean(axis=0), frames.std(axis=0)
