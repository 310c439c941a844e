"""Word error rate as published Whisper figures count it: OpenAI Whisper's English normaliser, then jiwer.

`normalize` is Whisper's `EnglishTextNormalizer` (the `whisper-normalizer` package, a copy of the one in
openai/whisper): lower case, no punctuation or filler words, contractions expanded ("don't" → "do not"),
British spellings made American, spelled-out numbers turned into digits ("fourteen fifty-five" → "1455",
"z three" → "z 3"), so that either way of writing a word compares equal. The WER is jiwer's (word-level
Levenshtein distance over the total reference length), counted over a whole corpus, not averaged per file.

Whisper's int8 output differs between CPUs by a word here and there (README.md, "Measured performance"), so
a comparison of two WERs is made with `WerLimit`, whose absolute slack a single word cannot exceed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

_NORMALIZER = EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normal form: lower-case words separated by single spaces."""
    return " ".join(_NORMALIZER(text).split())


def words(text: str) -> list[str]:
    """The words of `text` in normal form."""
    return normalize(text).split()


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER of raw texts, both sides normalised; pairs whose reference normalises to nothing are left
    out (a WER over zero reference words is undefined)."""
    refs, hyps = _normalized_pairs(references, hypotheses)
    return float(jiwer.wer(refs, hyps))


def word_errors(reference: str, hypothesis: str) -> list[str]:
    """What differs, after normalising, as "sub: 'ill disposed' -> 'old sposed'" (also "del:", "ins:")."""
    (ref,), (hyp,) = _normalized_pairs([reference], [hypothesis or ""])
    out = jiwer.process_words(ref, hyp)
    ref_words, hyp_words = out.references[0], out.hypotheses[0]
    return [
        f"{chunk.type[:3]}: {' '.join(ref_words[chunk.ref_start_idx : chunk.ref_end_idx])!r} -> "
        f"{' '.join(hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx])!r}"
        for chunk in out.alignments[0]
        if chunk.type != "equal"
    ]


@dataclass(frozen=True)
class WerLimit:
    """A WER is allowed up to max(ratio × baseline, baseline + slack), and never above `ceiling`.

    The ratio alone flips on one word when the baseline is small (3 vs 4 errors is 1.33×); `slack` (a WER, so
    words / reference words) is what a word or two may add whatever the baseline.
    """

    ratio: float
    slack: float
    ceiling: float = 1.0

    def bound(self, baseline: float) -> float:
        return min(self.ceiling, max(self.ratio * baseline, baseline + self.slack))

    def allows(self, wer: float, baseline: float) -> bool:
        return wer <= self.bound(baseline) + 1e-9


# Utterance windows vs the same files transcribed whole (tests/test_speech.py, bench/asr.py): windowing may
# cost up to 10 % relative or 2 points (4 words of the 221 in the 14 speech files), whichever is larger.
WINDOWED_VS_WHOLE = WerLimit(ratio=1.10, slack=0.02, ceiling=0.12)


def _normalized_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no reference words")
    return [r for r, _ in pairs], [h for _, h in pairs]
