"""Whisper on a batch of windows: CTranslate2 calls, run in the speech worker thread (agent/speech_batch.py).

Trimmed decoding pays for the audio a window has: its log-mel frames plus `pad_s` of silence, rounded up to
whole `bucket_s` so a batch shares one length (the encoder takes at most 3000 frames, 30 s), one encode and one
generate call for the batch. Whisper was trained on 30 s inputs, and on short ones tiny.en sometimes says the
window twice or trails off; a result that looks like that (see `fallback_reason`) is decoded again the ordinary
way, padded to 30 s by faster-whisper, as is every window when `decode` is "padded".
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import merge_punctuations

from agent.settings import SpeechSettings
from core.errors import ModelError
from core.types import SAMPLE_RATE_HZ, Transcript, Window, Word

MIN_AUDIO_S = 0.05  # shorter than this holds no word; Whisper is not asked
FRAMES_PER_S = 100  # log-mel frames (hop 160 samples at 16 kHz)
MAX_FRAMES = 3000  # the encoder's input, 30 s
# faster-whisper's defaults: punctuation that joins the next / the previous word
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True, slots=True)
class TrimmedDecoding:
    """How trimmed decoding pads its input and when it gives a window to the padded decode instead.

    Measured (bench/speech_sweep.py): trimmed to their audio, tiny.en repeats 6 of the speech set's 17
    windows; with 2 s of silence after it, 2 or 3; with inputs of at least 10 s, none. Shorter inputs also
    mishear more of GRID's 2 s commands (27 % WER at 2 s + pad, 20 % at 10 s, 11 % at 20 s, 12 % padded to 30 s).
    The thresholds are Whisper's own (compression ratio, log-prob, silence).
    """

    pad_s: float = 2.0  # silence after the window's audio
    min_input_s: float = 10.0  # speech.trimmed_min_input_s
    bucket_s: float = 1.0  # input lengths are whole multiples of this
    tokens_per_s: float = 6.0  # the token budget: fast speech is 4-5 tokens/s with punctuation
    token_margin: int = 8
    max_compression_ratio: float = 2.4
    min_avg_logprob: float = -1.0
    no_speech_threshold: float = 0.6  # above this with a low log-prob, the window is silence, not a failure
    repeated_words: int = 4  # the same run of this many words twice in one window is taken for a loop; 0: off
    no_repeat_ngram_size: int = 0  # CTranslate2's own guards (tokens); measured no better than the fallback
    repetition_penalty: float = 1.0

    def token_budget(self, duration_s: float) -> int:
        return math.ceil(duration_s * self.tokens_per_s) + self.token_margin

    def frames(self, content_frames: int) -> int:
        """The input length for a window of `content_frames`: padded, rounded up to a bucket, even."""
        bucket = max(2, round(self.bucket_s * FRAMES_PER_S) // 2 * 2)
        wanted = max(content_frames + round(self.pad_s * FRAMES_PER_S), round(self.min_input_s * FRAMES_PER_S))
        return min(MAX_FRAMES, math.ceil(wanted / bucket) * bucket)


UNGUARDED = TrimmedDecoding(
    max_compression_ratio=math.inf, min_avg_logprob=-math.inf, repeated_words=0, tokens_per_s=30.0
)  # for the benchmark: what trimmed decoding does without its fallback


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes: repeated text compresses well (Whisper's loop detector)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeats_words(text: str, n: int) -> bool:
    """Whether some run of `n` words (lower case, punctuation stripped) occurs twice in `text`."""
    if n <= 0:
        return False
    tokens = ["".join(ch for ch in w.lower() if ch.isalnum()) for w in text.split()]
    tokens = [t for t in tokens if t]
    runs = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(runs) != len(set(runs))


@dataclass(frozen=True, slots=True)
class TrimmedResult:
    """One row of a trimmed generate call."""

    tokens: tuple[int, ...]  # text tokens, no special ones
    text: str
    avg_logprob: float
    no_speech_prob: float
    budget: int

    def fallback_reason(self, options: TrimmedDecoding) -> str | None:
        """Why this result should be decoded again padded, or None when it can stand."""
        if len(self.tokens) >= self.budget:
            return "token_budget"
        if compression_ratio(self.text) > options.max_compression_ratio:
            return "compression_ratio"
        if repeats_words(self.text, options.repeated_words):
            return "repeated_words"
        if self.avg_logprob < options.min_avg_logprob:
            return "avg_logprob"
        return None

    def is_silence(self, options: TrimmedDecoding) -> bool:
        return self.no_speech_prob > options.no_speech_threshold and self.avg_logprob < options.min_avg_logprob


class WhisperDecoder:
    """Turns a batch of windows into transcripts with one shared model; used from one thread at a time."""

    def __init__(
        self,
        model: Any,
        settings: SpeechSettings,
        *,
        word_timestamps: bool,
        trimmed: TrimmedDecoding | None = None,
    ) -> None:
        self.model = model  # faster_whisper.WhisperModel; .model is its ctranslate2.models.Whisper
        self.settings = settings
        self.word_timestamps = word_timestamps
        self.trimmed = trimmed or TrimmedDecoding(min_input_s=settings.trimmed_min_input_s)
        self.language = settings.language or "en"
        # Trimmed decoding needs the language up front: an English-only model, or speech.language set.
        self.trims = settings.decode == "trimmed" and (settings.language is not None or not model.model.is_multilingual)
        self.tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=self.language
        )
        self.fallbacks: Counter[str] = Counter()  # why windows were decoded again padded

    def decode(self, windows: Sequence[Window]) -> Iterator[tuple[int, Transcript | Exception]]:
        """(row, transcript or that window's error), each as soon as it is ready: windows that trimmed
        decoding got right first, then each window decoded padded. An exception raised here fails every row
        not yet yielded."""
        started = time.perf_counter()
        padded_rows: list[int] = []
        trimmed_rows: list[int] = []
        for row, window in enumerate(windows):
            samples = _samples(window)
            if len(samples) < MIN_AUDIO_S * SAMPLE_RATE_HZ:
                yield row, Transcript(window, "", (), self.language, 1.0, _ms_since(started))
            elif self.trims and len(samples) / SAMPLE_RATE_HZ + self.trimmed.pad_s <= MAX_FRAMES / FRAMES_PER_S:
                trimmed_rows.append(row)
            else:
                padded_rows.append(row)
        if trimmed_rows:
            for index, outcome in self._decode_trimmed([windows[r] for r in trimmed_rows], started):
                if isinstance(outcome, str):
                    self.fallbacks[outcome] += 1
                    padded_rows.append(trimmed_rows[index])
                else:
                    yield trimmed_rows[index], outcome
        for row in sorted(padded_rows):
            try:
                yield row, self.decode_padded(windows[row], started)
            except (RuntimeError, ValueError) as exc:
                yield row, ModelError(f"Whisper failed on window {windows[row].seq}: {exc}")

    # -- padded: faster-whisper, one window at a time ------------------------------------------------------
    def padded_options(self) -> dict[str, Any]:
        return {
            "language": self.settings.language,
            "beam_size": self.settings.beam_size,
            "word_timestamps": self.word_timestamps,
            "vad_filter": False,  # windows already come from voice activity
            "condition_on_previous_text": False,
        }

    def decode_padded(self, window: Window, started: float | None = None) -> Transcript:
        started = time.perf_counter() if started is None else started
        segments, info = self.model.transcribe(_samples(window), **self.padded_options())
        texts: list[str] = []
        words: list[Word] = []
        no_speech = []
        for segment in segments:  # lazy: decoding happens here
            texts.append(segment.text.strip())
            no_speech.append(segment.no_speech_prob)
            for word in segment.words or ():
                words.append(Word(word.word.strip(), window.start_s + word.start, window.start_s + word.end,
                                  float(word.probability)))  # fmt: skip
        return Transcript(
            window=window,
            text=" ".join(t for t in texts if t),
            words=tuple(words),
            language=info.language or self.language,
            no_speech_prob=float(min(no_speech)) if no_speech else 1.0,
            latency_ms=_ms_since(started),
        )

    # -- trimmed: one encode and one generate for the batch ------------------------------------------------
    def _decode_trimmed(self, windows: Sequence[Window], started: float) -> Iterator[tuple[int, Transcript | str]]:
        """(row, transcript) or (row, why it needs the padded decode)."""
        # float32 [80, frames]; faster-whisper's extractor adds one frame past the audio
        mels = [self.model.feature_extractor(_samples(w))[:, :-1][:, :MAX_FRAMES] for w in windows]
        content = [m.shape[1] for m in mels]
        frames = self.trimmed.frames(max(content))
        features = np.zeros((len(windows), mels[0].shape[0], frames), np.float32)  # zeros: faster-whisper's pad
        for row, mel in enumerate(mels):
            features[row, :, : mel.shape[1]] = mel
        whisper = self.model.model
        several_gpus = whisper.device == "cuda" and len(whisper.device_index) > 1
        encoded = whisper.encode(ctranslate2.StorageView.from_array(features), to_cpu=several_gpus)
        prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        budgets = [self.trimmed.token_budget(w.duration_s) for w in windows]
        generated = whisper.generate(
            encoded,
            [prompt] * len(windows),
            beam_size=self.settings.beam_size,
            max_length=len(prompt) + max(budgets),
            return_scores=True,
            return_no_speech_prob=True,
            no_repeat_ngram_size=self.trimmed.no_repeat_ngram_size,
            repetition_penalty=self.trimmed.repetition_penalty,
        )
        results = [self._result(g, budget) for g, budget in zip(generated, budgets, strict=True)]
        kept: dict[int, TrimmedResult] = {}
        for row, result in enumerate(results):
            if result.is_silence(self.trimmed):
                yield row, Transcript(windows[row], "", (), self.language, result.no_speech_prob, _ms_since(started))
                continue
            reason = result.fallback_reason(self.trimmed)
            if reason is not None:
                yield row, reason
            else:
                kept[row] = result
        words = self._words(encoded, windows, content, kept) if self.word_timestamps else {}
        for row, result in kept.items():
            yield row, Transcript(windows[row], result.text, words.get(row, ()), self.language,
                                  result.no_speech_prob, _ms_since(started))  # fmt: skip

    def _result(self, generated: Any, budget: int) -> TrimmedResult:
        tokens = tuple(t for t in generated.sequences_ids[0] if t < self.tokenizer.eot)
        # CTranslate2's score is the sum of log-probs over the length (length_penalty 1); Whisper's average
        # also counts the end token.
        avg_logprob = generated.scores[0] * len(tokens) / (len(tokens) + 1)
        text = self.tokenizer.decode(list(tokens)).strip()
        return TrimmedResult(tokens, text, float(avg_logprob), float(generated.no_speech_prob), budget)

    def _words(
        self, encoded: Any, windows: Sequence[Window], content: list[int], kept: dict[int, TrimmedResult]
    ) -> dict[int, tuple[Word, ...]]:
        """Word times of the kept rows by cross-attention alignment (faster-whisper's `find_alignment`);
        rows not kept are aligned as empty."""
        tokens = [list(kept[row].tokens) if row in kept else [] for row in range(len(windows))]
        alignments = self.model.find_alignment(self.tokenizer, tokens, encoded, content)
        words: dict[int, tuple[Word, ...]] = {}
        for row in kept:
            alignment = alignments[row]
            merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
            window = windows[row]
            duration_s = window.duration_s
            words[row] = tuple(
                Word(
                    text=item["word"].strip(),
                    start_s=window.start_s + min(float(item["start"]), duration_s),
                    end_s=window.start_s + min(float(item["end"]), duration_s),
                    probability=float(item["probability"]),
                )
                for item in alignment
                if item["word"].strip()
            )
        return words


def _samples(window: Window) -> np.ndarray:
    return np.asarray(window.audio, dtype=np.float32).reshape(-1)  # float32 [n] 16 kHz


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
