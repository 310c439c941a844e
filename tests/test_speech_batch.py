"""The speech worker (agent/speech_batch.py) with a fake decoder, and trimmed decoding's guards
(agent/speech_decode.py) as pure functions. Real Whisper: tests/test_speech_batch_whisper.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from agent.speech_batch import SpeechBatcher
from agent.speech_decode import MAX_FRAMES, TrimmedDecoding, TrimmedResult, compression_ratio, repeats_words
from core.errors import ModelError
from core.types import StreamId, Transcript, Window

POISON_SEQ = 666


def _window(call: str, seq: int) -> Window:
    return Window(StreamId(call, "speaker"), seq, float(seq), seq + 1.0, np.zeros(16000, np.float32), (), "utterance")


class FakeDecoder:
    """Echoes each window's (stream, seq) as its text; answers rows last to first (as a padded re-decode
    would answer late), can hold a batch until released, and fails any batch with a POISON_SEQ window."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, windows: Sequence[Window]) -> Iterator[tuple[int, Transcript | Exception]]:
        self.batches.append([(w.stream.call_id, w.seq) for w in windows])
        self.started.set()
        self.release.wait(10)
        if any(w.seq == POISON_SEQ for w in windows):
            raise RuntimeError("CUDA out of memory")
        time.sleep(0.005)
        for row in reversed(range(len(windows))):
            window = windows[row]
            if window.seq == POISON_SEQ + 1:
                yield row, ModelError(f"window {window.seq} is unreadable")
            else:
                yield row, Transcript(window, f"{window.stream.call_id}/{window.seq}", (), "en", 0.0, 1.0)


async def test_each_stream_gets_its_own_windows_back_in_order() -> None:
    decoder = FakeDecoder()
    batcher = SpeechBatcher(decoder, max_batch=4, max_wait_ms=5)
    got: dict[str, list[Transcript]] = {}

    async def stream(call: str) -> None:  # like the pipeline: one window at a time per stream
        got[call] = []
        for seq in range(8):
            window = _window(call, seq)
            transcript = await batcher.transcribe_async(window)
            assert transcript.window is window
            got[call].append(transcript)

    calls = [f"call-{i}" for i in range(12)]
    try:
        await asyncio.gather(*(stream(c) for c in calls))
    finally:
        batcher.close()
    for call in calls:
        assert [t.text for t in got[call]] == [f"{call}/{seq}" for seq in range(8)]
    assert max(len(b) for b in decoder.batches) == 4  # windows of several streams did share batches
    assert sum(len(b) for b in decoder.batches) == 12 * 8
    assert all(s.batch_size == len(b) for s, b in zip(batcher.stats, decoder.batches, strict=True))


def test_windows_submitted_together_resolve_to_their_own_callers() -> None:
    decoder = FakeDecoder()
    batcher = SpeechBatcher(decoder, max_batch=8, max_wait_ms=0)
    windows = [_window(f"call-{seq % 3}", seq) for seq in range(20)]
    try:
        futures = [batcher.submit(w) for w in windows]
        results = [f.result(10) for f in futures]
    finally:
        batcher.close()
    assert [r.window for r in results] == windows
    assert [r.text for r in results] == [f"{w.stream.call_id}/{w.seq}" for w in windows]


def test_a_failing_batch_fails_only_its_own_windows() -> None:
    decoder = FakeDecoder(hold_first=True)
    batcher = SpeechBatcher(decoder, max_batch=4, max_wait_ms=0)
    try:
        first = batcher.submit(_window("a", 0))
        assert decoder.started.wait(10)  # the worker holds [a/0]; what follows queues behind it
        doomed = [batcher.submit(_window("b", seq)) for seq in (1, 2, POISON_SEQ, 3)]
        later = [batcher.submit(_window("c", seq)) for seq in (4, 5, 6, 7)]
        decoder.release.set()
        assert first.result(10).text == "a/0"
        for future in doomed:
            with pytest.raises(ModelError, match="speech decoding failed: CUDA out of memory"):
                future.result(10)
        assert [f.result(10).text for f in later] == ["c/4", "c/5", "c/6", "c/7"]
        assert decoder.batches[1] == [("b", 1), ("b", 2), ("b", POISON_SEQ), ("b", 3)]
        # one bad window in a batch fails alone, and the worker goes on
        alone = [batcher.submit(_window("d", seq)) for seq in (10, POISON_SEQ + 1, 11)]
        with pytest.raises(ModelError, match="unreadable"):
            alone[1].result(10)
        assert [alone[0].result(10).text, alone[2].result(10).text] == ["d/10", "d/11"]
    finally:
        batcher.close()


def test_a_decoder_that_skips_a_window_fails_that_window() -> None:
    def skipping(windows: Sequence[Window]) -> Iterator[tuple[int, Transcript | Exception]]:
        yield 0, Transcript(windows[0], "only the first", (), "en", 0.0, 1.0)

    batcher = SpeechBatcher(skipping, max_batch=2, max_wait_ms=50)
    try:
        futures = [batcher.submit(_window("a", 0)), batcher.submit(_window("a", 1))]
        assert futures[0].result(10).text == "only the first"
        with pytest.raises(ModelError, match="no transcript for window 1"):
            futures[1].result(10)
    finally:
        batcher.close()


def test_close_finishes_the_batch_in_flight_and_fails_the_rest() -> None:
    decoder = FakeDecoder(hold_first=True)
    batcher = SpeechBatcher(decoder, max_batch=1, max_wait_ms=0)
    in_flight = batcher.submit(_window("a", 0))
    assert decoder.started.wait(10)
    queued = [batcher.submit(_window("a", seq)) for seq in (1, 2)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    with pytest.raises(ModelError, match="closed"):
        batcher.submit(_window("a", 3))
    decoder.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert in_flight.result(0).text == "a/0"
    for future in queued:
        with pytest.raises(ModelError, match="closed before this window was decoded"):
            future.result(0)
    assert decoder.batches == [[("a", 0)]]


async def test_a_cancelled_caller_is_not_decoded() -> None:
    decoder = FakeDecoder(hold_first=True)
    batcher = SpeechBatcher(decoder, max_batch=4, max_wait_ms=0)
    try:
        first = asyncio.ensure_future(batcher.transcribe_async(_window("a", 0)))
        await asyncio.to_thread(decoder.started.wait, 10)
        cancelled = asyncio.ensure_future(batcher.transcribe_async(_window("b", 1)))
        kept = asyncio.ensure_future(batcher.transcribe_async(_window("c", 2)))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        decoder.release.set()
        assert (await first).text == "a/0" and (await kept).text == "c/2"
        assert decoder.batches[1] == [("c", 2)]
    finally:
        batcher.close()


# -- trimmed decoding: input lengths and guards ---------------------------------------------------------------
def test_trimmed_inputs_are_padded_bucketed_even_and_at_most_30_s() -> None:
    options = TrimmedDecoding(pad_s=2.0, min_input_s=0.0, bucket_s=1.0)
    assert options.frames(140) == 400  # 1.4 s + 2 s, up to whole seconds
    assert options.frames(801) == 1100
    assert options.frames(2950) == MAX_FRAMES
    assert TrimmedDecoding(min_input_s=10.0).frames(140) == 1000
    for frames in (1, 99, 333, 1234, 2999):
        assert TrimmedDecoding(bucket_s=0.37).frames(frames) % 2 == 0


def test_the_token_budget_grows_with_the_window() -> None:
    options = TrimmedDecoding(tokens_per_s=6.0, token_margin=8)
    assert options.token_budget(1.0) == 14
    assert options.token_budget(15.0) == 98


def test_loops_are_recognised_and_ordinary_speech_is_not() -> None:
    loop = "And so my fellow Americans. And so my fellow Americans. And"
    speech = (
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    )
    assert repeats_words(loop, 4)
    assert not repeats_words(speech, 4)  # "can do for you" / "can do for your" differ
    assert not repeats_words(loop, 0)  # 0 turns the check off
    assert compression_ratio("thank you " * 30) > 2.4 > compression_ratio(speech)
    assert compression_ratio("") == 0.0


@pytest.mark.parametrize(
    ("tokens", "text", "avg_logprob", "reason"),
    [
        (10, "He was not an ill-disposed young man.", -0.2, None),
        (14, "He was not an ill-disposed young man.", -0.2, "token_budget"),
        (10, "ha " * 40, -0.2, "compression_ratio"),
        (10, "in being comparatively modern. In being comparatively modern.", -0.2, "repeated_words"),
        (10, "ask not", -1.5, "avg_logprob"),
    ],
)
def test_a_trimmed_result_falls_back_for_one_reason(
    tokens: int, text: str, avg_logprob: float, reason: str | None
) -> None:
    result = TrimmedResult(tuple(range(tokens)), text, avg_logprob, no_speech_prob=0.1, budget=14)
    assert result.fallback_reason(TrimmedDecoding()) == reason
    assert not result.is_silence(TrimmedDecoding())


def test_silence_is_an_empty_window_not_a_failure() -> None:
    result = TrimmedResult((1, 2), "you", -1.4, no_speech_prob=0.9, budget=14)
    assert result.is_silence(TrimmedDecoding())
    assert not TrimmedResult((1, 2), "you", -0.4, no_speech_prob=0.9, budget=14).is_silence(TrimmedDecoding())
