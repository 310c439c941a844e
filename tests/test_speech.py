"""Speech: real faster-whisper tiny.en on real recordings; WER of windowed vs whole-file transcription."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.settings import SpeechSettings, WindowSettings
from agent.speech import SpeechRecognizer, load_whisper
from agent.transcribe_file import file_windows
from core.errors import ModelError
from core.media import decode_audio
from core.types import StreamId, Window
from core.wer import WINDOWED_VS_WHOLE, WerLimit, normalize, word_error_rate, word_errors

STREAM = StreamId("call-1", "patient-1", "patient")
WER_FILES = ("speech/jfk/", "speech/librivox_sense_and_sensibility/", "speech/ljspeech/")
# A sanity check of one file's transcript: its int8 output differs between CPUs by a word or two (README.md,
# "Measured performance"), so no test asserts an exact transcript; 10 % of JFK's 22 words is 2 words.
MAX_FILE_WER = 0.10


@pytest.fixture(scope="module")
def recognizer() -> Iterator[SpeechRecognizer]:
    recognizer = SpeechRecognizer(SpeechSettings(cpu_threads=2))
    yield recognizer
    recognizer.close()


def _audio(path: Path) -> np.ndarray:
    return decode_audio(path)


def _window(audio: np.ndarray, start_s: float, seq: int = 0) -> Window:
    return Window(STREAM, seq, start_s, start_s + len(audio) / 16000, audio, (), "utterance")


@pytest.fixture(scope="module")
def jfk_text(manifest: list[dict[str, str]]) -> str:
    (row,) = [r for r in manifest if r["path"] == "speech/jfk/jfk.flac"]
    return row["transcript"]


# -- text normalisation (Whisper's own, core/wer.py): either way of writing a word compares equal ----------
@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [
        ("And so, my fellow Americans: ask not!", "and so my fellow americans ask not"),
        ('the "forty-two line Bible" of about fourteen fifty-five,', "The 42 line Bible of about 1455."),
        ("Mr. John Dashwood", "Mister John Dashwood"),
        ("ill-disposed, cold-hearted", "ill disposed cold hearted"),
        ("Don't forget a jacket.", "Do not forget a jacket"),
        ("set white in z three now", "Set white in Z3 now."),
        ("  lots   of\tspace\n", "lots of space"),
    ],
)
def test_normalize_makes_spellings_equal(reference: str, hypothesis: str) -> None:
    assert normalize(reference) == normalize(hypothesis)
    assert word_error_rate([reference], [hypothesis]) == 0.0


def test_wer_counts_words_over_the_corpus() -> None:
    assert word_error_rate(["he was not an ill disposed young man", "has never been surpassed"], [
        "He was not an old sposed young man.", "has never been surpassed",
    ]) == pytest.approx(2 / 12)  # fmt: skip
    assert word_errors("And so, my fellow Americans", "And so am I fellow Americans.") == [
        "ins: '' -> 'am'", "sub: 'my' -> 'i'",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="reference"):
        word_error_rate([""], ["something"])


def test_windowed_limit_survives_one_word() -> None:
    words = 221  # in the 14 files of the WER test below
    # 7 vs 9 errors (this CPU, int8) is 1.29x: over a ratio of 1.10, within 2 points
    assert WINDOWED_VS_WHOLE.allows(9 / words, 7 / words)
    assert WINDOWED_VS_WHOLE.allows((7 + 4) / words, 7 / words)  # up to 4 more words
    assert not WINDOWED_VS_WHOLE.allows((7 + 5) / words, 7 / words)
    assert not WINDOWED_VS_WHOLE.allows(0.125, 0.12)  # never above 12 %
    assert WerLimit(ratio=1.2, slack=0.02).allows(0.36, 0.30)  # the ratio where it allows more


# -- recognizer ----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_one_model_per_process(recognizer: SpeechRecognizer) -> None:
    other = SpeechRecognizer(SpeechSettings(cpu_threads=2))
    try:
        assert other.model is recognizer.model is load_whisper(SpeechSettings(cpu_threads=2))
    finally:
        other.close()


@pytest.mark.integration
def test_words_are_in_media_time(recognizer: SpeechRecognizer, shared_data: Path, jfk_text: str) -> None:
    audio = _audio(shared_data / "speech/jfk/jfk.flac")
    transcript = recognizer.transcribe(_window(audio, 100.0))
    assert word_error_rate([jfk_text], [transcript.text]) <= MAX_FILE_WER, transcript.text
    assert transcript.language == "en"
    assert transcript.no_speech_prob < 0.5
    assert transcript.latency_ms > 0
    assert len(transcript.words) >= 20  # of 22
    starts = [w.start_s for w in transcript.words]
    assert starts == sorted(starts)
    assert all(100.0 <= w.start_s <= w.end_s <= 111.0 + 0.01 for w in transcript.words)
    assert all(0.0 <= w.probability <= 1.0 for w in transcript.words)
    # "country" is said twice, the last word ends close to the end of the speech (~10.5 s in).
    assert normalize(transcript.words[-1].text) == "country"
    assert 109.5 < transcript.words[-1].end_s <= 111.0


@pytest.mark.integration
def test_word_times_follow_the_window_offset(recognizer: SpeechRecognizer, shared_data: Path) -> None:
    audio = _audio(
        shared_data / "speech/librivox_sense_and_sensibility/sense_and_sensibility_01_austen_64kb-0880.wav"
    )
    at_zero = recognizer.transcribe(_window(audio, 0.0))
    later = recognizer.transcribe(_window(audio, 42.5, seq=7))
    assert [w.text for w in later.words] == [w.text for w in at_zero.words]
    for a, b in zip(at_zero.words, later.words, strict=True):
        assert b.start_s == pytest.approx(a.start_s + 42.5, abs=1e-6)
    assert later.window.seq == 7


@pytest.mark.integration
async def test_transcribe_async_keeps_the_event_loop_free(
    recognizer: SpeechRecognizer, shared_data: Path, jfk_text: str
) -> None:
    audio = _audio(shared_data / "speech/jfk/jfk.flac")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    transcript = await recognizer.transcribe_async(_window(audio, 0.0))
    elapsed_s = time.perf_counter() - started
    task.cancel()
    assert word_error_rate([jfk_text], [transcript.text]) <= MAX_FILE_WER, transcript.text
    assert ticks >= 0.5 * elapsed_s / 0.01  # the loop kept ticking while Whisper decoded


@pytest.mark.integration
def test_too_short_window_is_empty_without_decoding(recognizer: SpeechRecognizer) -> None:
    transcript = recognizer.transcribe(_window(np.zeros(100, np.float32), 5.0))
    assert transcript.text == "" and transcript.words == () and transcript.no_speech_prob == 1.0


def test_a_directory_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model.bin"):
        SpeechRecognizer(SpeechSettings(model_dir=tmp_path))


# -- word error rate -----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_windowed_wer_is_low_and_close_to_whole_file_wer(
    recognizer: SpeechRecognizer, manifest: list[dict[str, str]], shared_data: Path
) -> None:
    """Windowing costs at most a few words over whole-file decoding (core/wer.py, WINDOWED_VS_WHOLE).

    int8 kernels differ between CPUs, and so do a word or two of the transcripts: measured 4-8 errors whole and
    6-9 windowed of 221 words across the kernels of one CPU (README.md, "Measured performance"). A ratio alone
    flips on one word (7 vs 9 errors is 1.29x); the bound allows 4 words more than whole-file decoding.
    """
    rows = [r for r in manifest if r["path"].startswith(WER_FILES)]
    assert len(rows) == 14
    references, whole, windowed = [], [], []
    windows_total = 0
    for row in rows:
        path = shared_data / row["path"]
        references.append(row["transcript"])
        whole.append(" ".join(s.text for s in recognizer.transcribe_samples(_audio(path))))
        windows = list(file_windows(path, STREAM, WindowSettings(mode="utterance")))
        windows_total += len(windows)
        windowed.append(" ".join(recognizer.transcribe(w).text for w in windows))
    wer_whole = word_error_rate(references, whole)
    wer_windowed = word_error_rate(references, windowed)
    print(f"WER whole-file {wer_whole:.4f}, windowed {wer_windowed:.4f} over {windows_total} windows")
    for row, reference, a, b in zip(rows, references, whole, windowed, strict=True):
        if normalize(a) != normalize(b):
            print(f"  {row['path']}: whole {word_errors(reference, a)}, windowed {word_errors(reference, b)}")
    assert windows_total > len(rows)  # some files really were split into several windows
    assert WINDOWED_VS_WHOLE.allows(wer_windowed, wer_whole), (wer_windowed, WINDOWED_VS_WHOLE.bound(wer_whole))
