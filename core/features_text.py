"""Text input of the model: its own fast tokenizer (``tokenizer.json``), no transformers import.

Layout as MMSA's MOSI/MOSEI text_bert rows: the text is cut to ``max_length - 2`` word pieces, then the
tokenizer's own specials are added ([CLS] ... [SEP] for BERT), with no padding (the scorer pads).
Lower-casing and other normalisation are whatever the tokenizer file defines, after one optional rule a model
card may name (`TEXT_NORMALISERS`): Whisper spaces spelled letters and digits as it likes ("s0" from a call,
"s 0" from the file of the same words), and the word pieces differ ("s", "##0" against "s", "0").
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from core.errors import ConfigError

TOKENIZER_FILE = "tokenizer.json"
NO_NORMALISER = "none"
SPLIT_LETTERS_DIGITS = "split_letters_digits"  # a space between a letter and a digit next to it: "s0" -> "s 0"
TEXT_NORMALISERS = (NO_NORMALISER, SPLIT_LETTERS_DIGITS)
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")


def normalised(text: str, normaliser: str) -> str:
    """`text` as the tokenizer of a model trained with `normaliser` reads it."""
    if normaliser == NO_NORMALISER:
        return text
    if normaliser == SPLIT_LETTERS_DIGITS:
        return _LETTER_DIGIT.sub(" ", text)
    raise ValueError(f"text normaliser {normaliser!r} is not one this agent applies ({', '.join(TEXT_NORMALISERS)})")


def tokenizer_path(tokenizer_dir: Path) -> Path:
    """``tokenizer.json`` inside a bundle or text-encoder directory (ConfigError when absent)."""
    path = Path(tokenizer_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {TOKENIZER_FILE} in {tokenizer_dir}: the model's fast tokenizer file is needed"
        )
    return path


def tokenizer_sha256(tokenizer_dir: Path) -> str:
    """Identity of a tokenizer: SHA-256 of its ``tokenizer.json`` bytes."""
    return hashlib.sha256(tokenizer_path(tokenizer_dir).read_bytes()).hexdigest()


class TextTokenizer:
    """Token ids, attention mask and type ids (int64 [n] each, n <= max_length) of one transcript."""

    def __init__(self, tokenizer_dir: Path, max_length: int, normaliser: str = NO_NORMALISER) -> None:
        if max_length < 2:
            raise ValueError(f"text max length must be >= 2 (room for the specials), got {max_length}")
        path = tokenizer_path(tokenizer_dir)
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ConfigError(f"{path}: not a valid tokenizers file ({exc})") from exc
        self._tokenizer.no_padding()
        # Truncation counts the specials, so this keeps max_length - 2 pieces, then adds [CLS]/[SEP].
        self._tokenizer.enable_truncation(max_length=max_length)
        self.max_length = max_length
        normalised("", normaliser)  # refuses an unknown rule here, not at the first window
        self.normaliser = normaliser

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoding = self._tokenizer.encode(normalised(text, self.normaliser), add_special_tokens=True)
        ids = np.asarray(encoding.ids, dtype=np.int64)
        mask = np.asarray(encoding.attention_mask, dtype=np.int64)
        type_ids = np.asarray(encoding.type_ids, dtype=np.int64)
        return ids, mask, type_ids
