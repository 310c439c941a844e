"""CREMA-D (Cao et al. 2014) -> a labels CSV for ``models.dataset_builder``.

Labels come from the crowd's *perceived* emotion in ``summaryTable.csv`` (not the actor's intended one),
mapped to valence on MOSI's -3..3 scale:

    valence(code) = +1 for H (happy), 0 for N (neutral), -1 for A, D, F, S (anger, disgust, fear, sad)
    label = 3 * mean over the tied vote codes of valence(code) * level(code) / 100

where ``level`` is the percentage of raters who chose that code (ties are written ``"A:F"`` with levels
``"30.67:51.00"``). So a clip 58 % of raters saw as happy scores +1.74, a unanimous neutral one 0.
Columns: ``label`` = MultiModal (audio-visual) vote, ``label_A`` = Voice vote, ``label_V`` = Face vote,
``label_T`` = 0: all twelve CREMA-D sentences are neutral text. ``text`` is the sentence the code names.

Splits are by actor (no speaker in two splits), seeded; with fewer than 3 actors, by clip.

The shared corpus folder (``clips.csv`` + Opus audio, fixed actor splits, raw vote counts per rating
condition) is read by ``read_clips``; its label is ``voice_valence`` (see there).
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from core.splits import SPLITS, Split

log = logging.getLogger(__name__)

SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
VALENCE = {"H": 1.0, "N": 0.0, "A": -1.0, "D": -1.0, "F": -1.0, "S": -1.0}
LABEL_SCALE = 3.0
MEDIA_SUFFIXES = (".flv", ".mp4", ".avi", ".wav", ".mp3")  # video first: faces need frames
EMOTION_CODES = ("A", "D", "F", "H", "N", "S")  # the crowd's six answers, as in the vote columns
EMOTIONS = ("anger", "disgust", "fear", "happy", "neutral", "sad")  # intended_emotion, same order
# Mean raw voice valence of the intended-neutral clips of the train actors (3 * (H - A - D - F - S) / n):
# the offset that makes a neutral voice 0 (see voice_valence). Fixed here so labels do not move with a
# subset; tests/dataset/test_crema_d.py recomputes it from clips.csv.
NEUTRAL_VOICE_OFFSET = -0.6
LABEL_COLUMNS = ("file", "start_s", "end_s", "label", "label_T", "label_A", "label_V", "text", "split")


def vote_valence(vote: str, level: str) -> float:
    """Valence label of one perceived vote (``"H"``, ``"A:F"``) and its level(s) (``"57.9"``, ``"30:51"``)."""
    codes = vote.strip().split(":")
    levels = level.strip().split(":")
    if len(codes) != len(levels) or any(code not in VALENCE for code in codes):
        raise ValueError(f"unreadable CREMA-D vote {vote!r} with level {level!r}")
    values = [VALENCE[code] * float(value) / 100.0 for code, value in zip(codes, levels, strict=True)]
    return round(LABEL_SCALE * sum(values) / len(values), 4)


def read_summary(path: Path) -> dict[str, tuple[float, float, float]]:
    """Clip name -> (audio-visual, voice, face) valence labels from ``summaryTable.csv``."""
    if not path.is_file():
        raise ConfigError(f"CREMA-D summary table not found: {path}")
    labels: dict[str, tuple[float, float, float]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                labels[row["FileName"].strip()] = (
                    vote_valence(row["MultiModalVote"], row["MultiModalLevel"]),
                    vote_valence(row["VoiceVote"], row["VoiceLevel"]),
                    vote_valence(row["FaceVote"], row["FaceLevel"]),
                )
            except (KeyError, ValueError) as exc:
                raise ConfigError(f"{path}:{line}: {exc}") from exc
    return labels


def find_media(media_dir: Path) -> dict[str, Path]:
    """Clip name -> media file (searched recursively; a video wins over an audio-only copy)."""
    found: dict[str, Path] = {}
    for suffix in reversed(MEDIA_SUFFIXES):
        for path in sorted(media_dir.rglob(f"*{suffix}")):
            found[path.stem] = path
    return found


def assign_splits(
    names: list[str], *, seed: int, fractions: tuple[float, float] = (0.7, 0.15)
) -> dict[str, str]:
    """train/valid/test per clip, grouped by actor (the name's first field) when there are >= 3 actors."""
    actors = sorted({name.split("_")[0] for name in names})
    by_actor = len(actors) >= 3
    groups = actors if by_actor else sorted(names)
    random.Random(seed).shuffle(groups)
    n = len(groups)
    n_train = max(1, round(fractions[0] * n)) if n >= 3 else n
    n_valid = max(1, round(fractions[1] * n)) if n >= 3 else 0
    split_of = {
        g: "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
        for i, g in enumerate(groups)
    }
    return {name: split_of[name.split("_")[0] if by_actor else name] for name in names}


def write_labels(media_dir: Path, out_csv: Path, *, summary_csv: Path | None = None, seed: int = 0) -> int:
    """Write the labels CSV for every clip that has both media and a summary row; returns the row count."""
    summary = read_summary(summary_csv or media_dir / "summaryTable.csv")
    media = find_media(media_dir)
    names = sorted(name for name in media if name in summary and name.split("_")[1] in SENTENCES)
    missing = len(summary) - len(names)
    if not names:
        raise ConfigError(f"{media_dir}: no CREMA-D clip with both media and a summaryTable.csv row")
    if missing:
        log.info("CREMA-D: %d clips in the summary table have no media in %s", missing, media_dir)
    splits = assign_splits(names, seed=seed)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for name in names:
            av_label, voice, face = summary[name]
            relative = media[name].relative_to(media_dir).as_posix()
            text = SENTENCES[name.split("_")[1]]
            writer.writerow((relative, 0.0, "", av_label, 0.0, voice, face, text, splits[name]))
    return len(names)


@dataclass(frozen=True, slots=True)
class CremaClip:
    """One row of the shared corpus's ``clips.csv``: an actor's sentence in one emotion, and its votes."""

    file: str  # relative to the corpus folder (audio/1001_DFA_ANG_XX.opus)
    actor: str
    split: Split
    sentence: str
    emotion: str  # intended: anger, disgust, fear, happy, neutral, sad
    level: str  # intended intensity: low, medium, high, unspecified
    voice_votes: dict[str, int]  # A, D, F, H, N, S -> raters who heard that from the voice alone
    voice_n: int

    @property
    def name(self) -> str:
        return Path(self.file).stem


def raw_voice_valence(votes: dict[str, int], n: int) -> float:
    """3 x (happy - anger - disgust - fear - sad) / raters: the mean rater's valence on -3..3."""
    negative = votes["A"] + votes["D"] + votes["F"] + votes["S"]
    return LABEL_SCALE * (votes["H"] - negative) / n


def voice_valence(clip: CremaClip) -> float:
    """The valence listeners heard in the voice alone, on the -3..3 scale (the label of a clip).

    Each rater counts +1 (happy), 0 (neutral) or -1 (anger, disgust, fear, sad); the mean times 3 is shifted
    by NEUTRAL_VOICE_OFFSET and clipped to -3..3. Raters choose among one positive and four negative answers,
    so an unclear voice drifts negative: the intended-neutral clips average -0.6 unshifted. Centring them on
    0 keeps 0 meaning "neutral" as on the rated-sentence scale the model also learns from.
    """
    value = raw_voice_valence(clip.voice_votes, clip.voice_n) - NEUTRAL_VOICE_OFFSET
    return round(min(LABEL_SCALE, max(-LABEL_SCALE, value)), 4)


def read_clips(clips_csv: Path) -> list[CremaClip]:
    """Every clip with at least one voice-only rating, in file order; a malformed row is a ConfigError."""
    if not clips_csv.is_file():
        raise ConfigError(f"CREMA-D clips table not found: {clips_csv}")
    clips: list[CremaClip] = []
    with open(clips_csv, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                votes = {code: int(row[f"voice_{code}"]) for code in EMOTION_CODES}
                n = int(row["voice_n"])
                split = row["split"]
                if split not in SPLITS or row["intended_emotion"] not in EMOTIONS:
                    raise ValueError(f"split {split!r} / emotion {row['intended_emotion']!r}")
                if n <= 0 or sum(votes.values()) > n:
                    raise ValueError(f"{sum(votes.values())} voice votes for {n} ratings")
            except (KeyError, ValueError) as exc:
                raise ConfigError(f"{clips_csv}:{line}: {exc}") from exc
            clips.append(CremaClip(row["file"], row["actor"], split, row["sentence"], row["intended_emotion"],
                                   row["intended_level"], votes, n))
    if not clips:
        raise ConfigError(f"{clips_csv}: no clips")
    return clips


def write_clip_labels(clips_csv: Path, out_csv: Path) -> int:
    """The labels CSV of a ``clips.csv`` corpus folder: its fixed actor splits, ``voice_valence`` as the label
    (and as ``label_A``), the read sentence as text; files relative to the folder. Returns the row count."""
    clips = read_clips(clips_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for clip in clips:
            label = voice_valence(clip)
            writer.writerow((clip.file, 0.0, "", label, "", label, "", clip.sentence, clip.split))
    return len(clips)
