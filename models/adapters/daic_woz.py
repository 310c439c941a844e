"""DAIC-WOZ (Gratch et al. 2014; AVEC 2017 splits) -> a labels CSV for ``models.dataset_builder``.

Layout read: ``<root>/<pid>_P/<pid>_AUDIO.wav``, ``<root>/<pid>_P/<pid>_TRANSCRIPT.csv`` (tab-separated
``start_time stop_time speaker value``), and at the root ``train_split_Depression_AVEC2017.csv``,
``dev_split_Depression_AVEC2017.csv`` (Participant_ID, PHQ8_Score, ...) and ``full_test_split.csv``
(Participant_ID, PHQ_Score, ...).

Windows are the participant's turns (Ellie's are dropped): consecutive participant turns less than
``merge_gap_s`` apart are merged up to ``max_length_s`` (a longer single turn is cut into equal pieces);
windows shorter than ``min_length_s`` or without words are dropped.
Every window of a participant carries that participant's PHQ-8 total (0-24) as ``label`` (a per-interview
score, so window labels are weak); the text is the transcript's words with ``<...>``/``[...]`` markers
removed. Splits: train, dev -> valid, test.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

log = logging.getLogger(__name__)

SPLIT_FILES = (
    ("train", "train_split_Depression_AVEC2017.csv"),
    ("valid", "dev_split_Depression_AVEC2017.csv"),
    ("test", "full_test_split.csv"),
)
SCORE_COLUMNS = ("PHQ8_Score", "PHQ_Score")
LABEL_COLUMNS = ("file", "start_s", "end_s", "label", "text", "split")
_MARKUP = re.compile(r"<[^>]*>|\[[^\]]*\]")


@dataclass(frozen=True, slots=True)
class Turn:
    start_s: float
    end_s: float
    text: str


def read_phq(root: Path) -> dict[str, tuple[float, str]]:
    """Participant id -> (PHQ-8 score, split) from the AVEC 2017 split files present under ``root``."""
    scores: dict[str, tuple[float, str]] = {}
    for split, name in SPLIT_FILES:
        path = root / name
        if not path.is_file():
            log.info("DAIC-WOZ: no %s in %s (split %s left empty)", name, root, split)
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                column = next((c for c in SCORE_COLUMNS if c in row), None)
                if column is None or "Participant_ID" not in row:
                    raise ConfigError(f"{path}: needs Participant_ID and one of {', '.join(SCORE_COLUMNS)}")
                try:
                    score = float(row[column])
                except ValueError:
                    raise ConfigError(f"{path}:{line}: {column} is not a number: {row[column]!r}") from None
                if not 0 <= score <= 24:
                    raise ConfigError(f"{path}:{line}: PHQ-8 score {score} outside 0..24")
                scores[row["Participant_ID"].strip()] = (score, split)
    if not scores:
        raise ConfigError(f"{root}: no DAIC-WOZ split file ({', '.join(n for _, n in SPLIT_FILES)})")
    return scores


def participant_turns(path: Path) -> list[Turn]:
    """The participant's turns of one interview transcript, in time order."""
    turns = []
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle, delimiter="\t"), start=2):
            if (row.get("speaker") or "").strip().lower() != "participant":
                continue
            try:
                start_s, end_s = float(row["start_time"]), float(row["stop_time"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{path}:{line}: needs numeric start_time and stop_time") from None
            text = " ".join(_MARKUP.sub(" ", row.get("value") or "").split())
            if end_s > start_s:
                turns.append(Turn(start_s, end_s, text))
    return sorted(turns, key=lambda t: t.start_s)


def merge_turns(
    turns: list[Turn], *, merge_gap_s: float, min_length_s: float, max_length_s: float
) -> list[Turn]:
    """Join close turns into windows of at most ``max_length_s``; drop those under ``min_length_s``."""
    windows: list[Turn] = []
    for turn in turns:
        last = windows[-1] if windows else None
        if (
            last is not None
            and turn.start_s - last.end_s < merge_gap_s
            and turn.end_s - last.start_s <= max_length_s
        ):
            windows[-1] = Turn(last.start_s, turn.end_s, f"{last.text} {turn.text}".strip())
        else:
            windows.append(turn)
    # A window without words (only <laughter>-style markup) is dropped: the labels need its text.
    return [w for w in windows if min_length_s <= w.end_s - w.start_s and w.text]


def write_labels(
    root: Path,
    out_csv: Path,
    *,
    merge_gap_s: float = 0.5,
    min_length_s: float = 1.0,
    max_length_s: float = 15.0,
) -> int:
    """Write the labels CSV for every participant with audio, transcript and a PHQ-8 score."""
    scores = read_phq(root)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for pid, (score, split) in sorted(scores.items()):
            folder = root / f"{pid}_P"
            audio, transcript = folder / f"{pid}_AUDIO.wav", folder / f"{pid}_TRANSCRIPT.csv"
            if not (audio.is_file() and transcript.is_file()):
                log.warning(
                    "DAIC-WOZ: participant %s has no %s or %s; skipped", pid, audio.name, transcript.name
                )
                continue
            turns = participant_turns(transcript)
            windows = merge_turns(
                turns, merge_gap_s=merge_gap_s, min_length_s=min_length_s, max_length_s=max_length_s
            )
            for piece in (p for w in windows for p in _pieces(w, max_length_s)):
                writer.writerow(
                    (audio.relative_to(root).as_posix(), piece.start_s, piece.end_s, score, piece.text, split)
                )
                count += 1
    if count == 0:
        raise ConfigError(f"{root}: no participant window could be made (audio + transcript + score)")
    return count


def _pieces(window: Turn, max_length_s: float) -> list[Turn]:
    """A turn longer than the windower's maximum, cut into equal pieces; words shared out evenly by count
    (the transcripts have no word times, so a piece's text is approximate)."""
    length = window.end_s - window.start_s
    if length <= max_length_s:
        return [window]
    n = int(-(-length // max_length_s))
    step = length / n
    words = window.text.split()
    pieces = []
    for i in range(n):
        text = " ".join(words[round(i * len(words) / n) : round((i + 1) * len(words) / n)])
        start_s, end_s = round(window.start_s + i * step, 3), round(window.start_s + (i + 1) * step, 3)
        pieces.append(Turn(start_s, end_s, text))
    return pieces
