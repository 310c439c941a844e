"""Speech: real faster-whisper tiny.en on real recordings; WER of windowed vs whole-file transcription."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest

from agent.settings import SpeechSettings, WindowSettings
from agent.speech import SpeechRecognizer, load_whisper
from agent.text_norm import normalize, number_to_words
from agent.transcribe_file import file_windows
from core.errors import ModelError
from core.media import decode_file
from core.types import AudioChunk, StreamId, Window

STREAM = StreamId("call-1", "patient-1", "patient")
WER_FILES = ("speech/jfk/", "speech/librivox_sense_and_sensibility/", "speech/ljspeech/")


@pytest.fixture(scope="module")
def recognizer() -> Iterator[SpeechRecognizer]:
    recognizer = SpeechRecognizer(SpeechSettings(cpu_threads=2))
    yield recognizer
    recognizer.close()


def _audio(path: Path) -> np.ndarray:
    return np.concatenate([c.samples for c in decode_file(path) if isinstance(c, AudioChunk)])


def _window(audio: np.ndarray, start_s: float, seq: int = 0) -> Window:
    return Window(STREAM, seq, start_s, start_s + len(audio) / 16000, audio, (), "utterance")


# -- text normalisation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("And so, my fellow Americans: ask not!", "and so my fellow americans ask not"),
        (
            'the "forty-two line Bible" of about 1455,',
            "the forty two line bible of about fourteen fifty five",
        ),
        ("Mr. John Dashwood", "mister john dashwood"),
        ("ill-disposed, cold-hearted", "ill disposed cold hearted"),
        ("Don't forget a jacket.", "dont forget a jacket"),
        ("in 2000 there were 121 books", "in two thousand there were one hundred twenty one books"),
        ("the 15th century, the 1st and 22nd", "the fifteenth century the first and twenty second"),
        (
            "1,250 people and 3.5 percent",
            "one thousand two hundred fifty people and three point five percent",
        ),
        ("1900 and 1905", "nineteen hundred and nineteen oh five"),
        ("  lots   of\tspace\n", "lots of space"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_number_to_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(40) == "forty"
    assert number_to_words(1_000_001) == "one million one"
    assert number_to_words(999) == "nine hundred ninety nine"


# -- recognizer ----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_one_model_per_process(recognizer: SpeechRecognizer) -> None:
    other = SpeechRecognizer(SpeechSettings(cpu_threads=2))
    try:
        assert other.model is recognizer.model is load_whisper(SpeechSettings(cpu_threads=2))
    finally:
        other.close()


@pytest.mark.integration
def test_words_are_in_media_time(recognizer: SpeechRecognizer, shared_data: Path) -> None:
    audio = _audio(shared_data / "speech/jfk/jfk.flac")
    transcript = recognizer.transcribe(_window(audio, 100.0))
    assert "ask not what your country can do for you" in normalize(transcript.text)
    assert transcript.language == "en"
    assert transcript.no_speech_prob < 0.5
    assert transcript.latency_ms > 0
    assert len(transcript.words) >= 20
    starts = [w.start_s for w in transcript.words]
    assert starts == sorted(starts)
    assert all(100.0 <= w.start_s <= w.end_s <= 111.0 + 0.01 for w in transcript.words)
    assert all(0.0 <= w.probability <= 1.0 for w in transcript.words)
    # "country" is said twice, the last word ends close to the end of the speech (~10.5 s in).
    assert transcript.words[-1].text.strip(".").lower() == "country"
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
    recognizer: SpeechRecognizer, shared_data: Path
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
    assert "fellow americans" in normalize(transcript.text)
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
    rows = [r for r in manifest if r["path"].startswith(WER_FILES)]
    assert len(rows) == 14
    references, whole, windowed = [], [], []
    windows_total = 0
    for row in rows:
        path = shared_data / row["path"]
        references.append(normalize(row["transcript"]))
        whole.append(normalize(" ".join(s.text for s in recognizer.transcribe_samples(_audio(path)))))
        windows = list(file_windows(path, STREAM, WindowSettings(mode="utterance")))
        windows_total += len(windows)
        windowed.append(normalize(" ".join(recognizer.transcribe(w).text for w in windows)))
    wer_whole = jiwer.wer(references, whole)
    wer_windowed = jiwer.wer(references, windowed)
    print(f"WER whole-file {wer_whole:.4f}, windowed {wer_windowed:.4f} over {windows_total} windows")
    assert windows_total > len(rows)  # some files really were split into several windows
    assert wer_windowed <= 0.12
    assert wer_windowed <= 1.10 * wer_whole
