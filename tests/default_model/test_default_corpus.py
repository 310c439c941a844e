"""The rated corpus: parsing, rescaling, the seeded stratified split, and the real vaderSentiment sdist."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from default_model.corpus import (
    CORPORA,
    CorpusError,
    RatedSentence,
    load_corpus,
    parse_ground_truth,
    sample_per_corpus,
    split_corpus,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Counts of the four *_GroundTruth.txt files in vaderSentiment 3.3.2's hutto_ICWSM_2014.tar.gz
TEST_SPLIT_SHA256 = "620f443f166d0d7a36591d8092108f04f66035f460a830e9b0b2923135116b04"  # seed 1234
EXPECTED_COUNTS = {"movie_reviews": 10605, "tweets": 4200, "nyt": 5190, "amazon": 3708}


def _fake_corpus(per_corpus: int) -> list[RatedSentence]:
    return [
        RatedSentence(corpus, f"{i}", ((i * 37) % 81 - 40) / 10.0, f"sentence {corpus} {i}")
        for corpus in CORPORA for i in range(per_corpus)
    ]


def test_parse_reads_rows_and_rescales_to_three() -> None:
    lines = ["1\t2.0\tGreat film!\r\n", "\n", "2_7\t-4\tAwful &amp; dull\n"]
    rows = parse_ground_truth(lines, "movie_reviews")
    assert [r.sentence_id for r in rows] == ["1", "2_7"]
    assert rows[0].text == "Great film!"
    assert rows[0].label == pytest.approx(1.5)
    assert rows[1].label == pytest.approx(-3.0)
    assert rows[1].key == "movie_reviews/2_7"


@pytest.mark.parametrize(
    ("line", "problem"),
    [("1\tabc\ttext", "not a number"), ("1\t5.5\ttext", "outside -4..4"), ("1\t0.5", "3 tab-separated"),
     ("1\t0.5\t   ", "empty sentence")],
)
def test_parse_names_the_bad_line(line: str, problem: str) -> None:
    with pytest.raises(CorpusError, match=rf"f\.txt:2: .*{problem}"):
        parse_ground_truth(["9\t1.0\tfine", line], "nyt", source="f.txt")


def test_split_is_seeded_stratified_and_disjoint() -> None:
    sentences = _fake_corpus(200)
    first = split_corpus(sentences, seed=7)
    again = split_corpus(list(reversed(sentences)), seed=7)  # input order must not matter
    other = split_corpus(sentences, seed=8)
    keys = {name: [s.key for s in part] for name, part in first.items()}
    assert {name: sorted(k) for name, k in keys.items()} == {
        name: sorted(s.key for s in part) for name, part in again.items()
    }
    assert sorted(keys["test"]) != sorted(s.key for s in other["test"])
    assert set(keys["train"]).isdisjoint(keys["test"]) and set(keys["valid"]).isdisjoint(keys["test"])
    assert sum(len(k) for k in keys.values()) == len(sentences)
    for name, expected in (("train", 160), ("valid", 20), ("test", 20)):
        assert Counter(s.corpus for s in first[name]) == {c: expected for c in CORPORA}


def test_sample_per_corpus_is_fixed_and_bounded() -> None:
    sentences = _fake_corpus(30)
    sample = sample_per_corpus(sentences, 10, seed=3)
    assert Counter(s.corpus for s in sample) == {c: 10 for c in CORPORA}
    assert [s.key for s in sample] == [s.key for s in sample_per_corpus(sentences, 10, seed=3)]
    assert len(sample_per_corpus(sentences, 100, seed=3)) == len(sentences)


def test_real_corpus_from_the_vader_sdist() -> None:
    """Fetched with pip from the registry on first use (cached under .affectstream/cache/vader)."""
    sentences = load_corpus(REPO_ROOT / ".affectstream" / "cache" / "vader")
    assert Counter(s.corpus for s in sentences) == EXPECTED_COUNTS
    assert all(-3.0 <= s.label <= 3.0 for s in sentences)
    splits = split_corpus(sentences)
    assert {k: len(v) for k, v in splits.items()} == {"train": 18962, "valid": 2370, "test": 2371}
    # pinned: the committed model was evaluated on exactly these test sentences
    digest = hashlib.sha256("\n".join(sorted(s.key for s in splits["test"])).encode()).hexdigest()
    assert digest == TEST_SPLIT_SHA256
