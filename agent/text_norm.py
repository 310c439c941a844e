"""Text normalisation for word error rate: lower case, no punctuation, numbers as words.

Numbers are spelled the way a reader says them: years 1100-1999 and 2010-2099 in pairs ("1455" → "fourteen
fifty five"), other integers in full ("2000" → "two thousand"), ordinals ("5th" → "fifth"), decimals digit by
digit after "point". A few title abbreviations are expanded ("mr" → "mister"); hyphens and apostrophes inside
words become spaces / are dropped so "cold-hearted" and "cold hearted" compare equal.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus"}
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:st|nd|rd|th)?")


def normalize(text: str) -> str:
    """Lower-case words separated by single spaces, without punctuation, numbers spelled out."""
    text = text.lower().replace("%", " percent ").replace("&", " and ")
    text = _NUMBER.sub(lambda match: f" {_spell(match.group(0))} ", text)
    text = re.sub(r"(?<=\w)['’](?=\w)", "", text)  # don't → dont on both sides
    text = re.sub(r"[^a-z0-9\s]", " ", text)
    words = [_ABBREVIATIONS.get(word, word) for word in text.split()]
    return " ".join(words)


def number_to_words(value: int) -> str:
    """Cardinal English words for a non-negative integer ("121" → "one hundred twenty one")."""
    if value < 0:
        return "minus " + number_to_words(-value)
    if value < 20:
        return _ONES[value]
    if value < 100:
        tens, ones = divmod(value, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for scale, name in _SCALES:
        if value >= scale:
            head, rest = divmod(value, scale)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _spell(token: str) -> str:
    ordinal = token[-2:] in ("st", "nd", "rd", "th")
    digits = token[:-2] if ordinal else token
    whole, _, fraction = digits.replace(",", "").partition(".")
    if ordinal:
        return _ordinal(number_to_words(int(whole)))
    if fraction:
        return number_to_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in fraction)
    if "," not in digits and len(whole) == 4 and _is_year_like(int(whole)):
        return _year(int(whole))
    return number_to_words(int(whole))


def _is_year_like(value: int) -> bool:
    return 1100 <= value <= 1999 or 2010 <= value <= 2099


def _year(value: int) -> str:
    head, tail = divmod(value, 100)
    if tail == 0:
        return f"{number_to_words(head)} hundred"
    if tail < 10:
        return f"{number_to_words(head)} oh {number_to_words(tail)}"
    return f"{number_to_words(head)} {number_to_words(tail)}"


def _ordinal(words: str) -> str:
    *head, last = words.split()
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])
