"""The human-rated sentences of the vaderSentiment 3.3.2 source distribution (Hutto & Gilbert, ICWSM 2014).

23,699 real sentences in four corpora, each rated by ~20 people on -4..+4; the mean rating is rescaled to the
-3..3 sentiment range. The corpus comes from PyPI as the sdist (`pip download --no-binary :all:`), so a build
needs nothing but the package registry. The train/valid/test split is fixed by a seed, stratified by corpus.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.splits import SPLITS, Split
from models.errors import ModelError

log = logging.getLogger(__name__)

VADER_VERSION = "3.3.2"
SDIST_NAME = f"vaderSentiment-{VADER_VERSION}.tar.gz"
ARCHIVE_MEMBER = f"vaderSentiment-{VADER_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
# corpus name -> file inside hutto_ICWSM_2014/
CORPUS_FILES: dict[str, str] = {
    "tweets": "tweets_GroundTruth.txt",
    "movie_reviews": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
CORPORA: tuple[str, ...] = tuple(CORPUS_FILES)
RATING_MAX = 4.0  # raters used -4..+4
LABEL_MAX = 3.0  # our sentiment range is -3..3 (MOSI's)
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_SEED = 1234


class CorpusError(ModelError):
    """The corpus could not be fetched or parsed."""


@dataclass(frozen=True, slots=True)
class RatedSentence:
    corpus: str
    sentence_id: str  # the id column of the ground-truth file
    rating: float  # mean human rating, -4..+4
    text: str

    @property
    def label(self) -> float:
        """The rating rescaled to -3..3."""
        return self.rating * LABEL_MAX / RATING_MAX

    @property
    def key(self) -> str:
        return f"{self.corpus}/{self.sentence_id}"


def default_cache_dir() -> Path:
    return Path(".affectstream") / "cache" / "vader"


def fetch_sdist(cache_dir: Path) -> Path:
    """The vaderSentiment sdist in `cache_dir`, downloaded with this interpreter's pip when missing."""
    sdist = cache_dir / SDIST_NAME
    if sdist.is_file():
        return sdist
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--no-binary", ":all:", f"vaderSentiment=={VADER_VERSION}", "-d", str(cache_dir),
    ]
    log.info("downloading the vaderSentiment %s source distribution into %s", VADER_VERSION, cache_dir)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not sdist.is_file():
        raise CorpusError(
            f"could not download {SDIST_NAME} with pip (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )
    return sdist


def extract_corpus(cache_dir: Path) -> Path:
    """The directory holding the four *_GroundTruth.txt files (extracted once into `cache_dir`)."""
    target = cache_dir / "hutto_ICWSM_2014"
    if all((target / name).is_file() for name in CORPUS_FILES.values()):
        return target
    sdist = fetch_sdist(cache_dir)
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_file = outer.extractfile(ARCHIVE_MEMBER)
            if inner_file is None:
                raise CorpusError(f"{sdist}: {ARCHIVE_MEMBER} is not a file")
            with tarfile.open(fileobj=inner_file, mode="r:gz") as inner:
                for member in inner.getmembers():
                    name = Path(member.name).name
                    if name in CORPUS_FILES.values() and member.isfile():
                        data = inner.extractfile(member)
                        assert data is not None
                        target.mkdir(parents=True, exist_ok=True)
                        (target / name).write_bytes(data.read())
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise CorpusError(f"{sdist}: cannot extract the rated corpus ({exc})") from exc
    missing = [name for name in CORPUS_FILES.values() if not (target / name).is_file()]
    if missing:
        raise CorpusError(f"{sdist}: archive lacks {', '.join(missing)}")
    return target


def parse_ground_truth(lines: Iterable[str], corpus: str, *, source: str = "<lines>") -> list[RatedSentence]:
    """Rows `id<TAB>mean rating<TAB>text`; blank lines skipped, anything else malformed is an error."""
    sentences: list[RatedSentence] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise CorpusError(f"{source}:{number}: expected 3 tab-separated columns, got {len(parts)}")
        sentence_id, rating_text, text = parts
        try:
            rating = float(rating_text)
        except ValueError:
            raise CorpusError(f"{source}:{number}: rating {rating_text!r} is not a number") from None
        if not -RATING_MAX <= rating <= RATING_MAX:
            raise CorpusError(f"{source}:{number}: rating {rating} outside -4..4")
        text = text.strip()
        if not text:
            raise CorpusError(f"{source}:{number}: empty sentence")
        sentences.append(RatedSentence(corpus, sentence_id.strip(), rating, text))
    return sentences


def load_corpus(cache_dir: Path | None = None) -> list[RatedSentence]:
    """All rated sentences of the four corpora, in file order (fetching the sdist when needed)."""
    directory = extract_corpus(cache_dir or default_cache_dir())
    sentences: list[RatedSentence] = []
    for corpus, name in CORPUS_FILES.items():
        path = directory / name
        with path.open(encoding="latin-1", newline="") as handle:
            sentences.extend(parse_ground_truth(handle, corpus, source=str(path)))
    log.info("loaded %d rated sentences from %s", len(sentences), directory)
    return sentences


def _stable_order(keys: Sequence[str], seed: int) -> list[int]:
    """A permutation fixed by the seed and the sentence keys (independent of numpy's RNG versions)."""
    digests = [hashlib.sha256(f"{seed}:{key}".encode()).hexdigest() for key in keys]
    return sorted(range(len(keys)), key=lambda i: digests[i])


def split_corpus(
    sentences: Sequence[RatedSentence],
    *,
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> dict[Split, list[RatedSentence]]:
    """Seeded train/valid/test split, stratified by corpus (each corpus split by the same fractions)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    splits: dict[Split, list[RatedSentence]] = {name: [] for name in SPLITS}
    for corpus in sorted({s.corpus for s in sentences}):
        members = [s for s in sentences if s.corpus == corpus]
        order = _stable_order([s.key for s in members], seed)
        n_train = int(round(fractions[0] * len(members)))
        n_valid = int(round(fractions[1] * len(members)))
        bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid),
                  "test": (n_train + n_valid, len(members))}
        for name, (low, high) in bounds.items():
            splits[name].extend(members[i] for i in order[low:high])  # type: ignore[index]
    return splits


def sample_per_corpus(
    sentences: Sequence[RatedSentence], per_corpus: int, *, seed: int = DEFAULT_SEED
) -> list[RatedSentence]:
    """A fixed seeded sample of up to `per_corpus` sentences from each corpus (for the spoken subset)."""
    chosen: list[RatedSentence] = []
    for corpus in sorted({s.corpus for s in sentences}):
        members = [s for s in sentences if s.corpus == corpus]
        order = _stable_order([s.key for s in members], seed + 1)
        chosen.extend(members[i] for i in order[:per_corpus])
    return chosen
