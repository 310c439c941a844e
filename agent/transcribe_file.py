"""Transcribe a recording: decode, window as live would, Whisper each window; JSON lines out, Kafka if asked.

Publishing sends each transcript as it is made (agent/producer.py) and confirms them all at the end: a
transcript the broker did not acknowledge is a PublishError, never a silent loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from kafka.producer.future import FutureRecordMetadata

from agent.errors import PublishError
from agent.messages import envelope, transcript_message
from agent.producer import Acks, confirm, open_producer, send
from agent.settings import Settings, WindowSettings
from agent.speech import SpeechRecognizer
from agent.transcripts_io import stream_for_file, transcript_line
from agent.vad import SileroVad
from agent.windows import Windower
from core.errors import NoAudioError
from core.media import decode_file, probe
from core.types import StreamId, Transcript, Window

log = logging.getLogger(__name__)


def file_windows(path: str | Path, stream: StreamId, settings: WindowSettings) -> Iterator[Window]:
    """Windows of a recorded file, exactly as a live stream of the same media would be cut."""

    windower = Windower(stream, settings, SileroVad() if settings.mode == "utterance" else None)
    for item in decode_file(path):
        yield from windower.push(item)
    yield from windower.flush()


def transcribe_file(path: Path, settings: Settings, out: TextIO, *, publish: bool = False) -> list[Transcript]:
    """Transcribe every window of `path`, write one JSON line each to `out`, publish them if asked."""

    info = probe(path)  # a bad file fails here, before the model loads
    if not info.has_audio:
        raise NoAudioError(str(path), "has no audio track: nothing to transcribe")
    stream = stream_for_file(path)
    timeout_s = settings.publish.delivery_timeout_s
    transcripts: list[Transcript] = []
    sends: list[FutureRecordMetadata] = []
    with ExitStack() as stack:
        producer = None
        if publish:  # before Whisper loads: an unreachable broker fails fast
            producer = open_producer(settings.kafka, settings.publish, [settings.kafka.topics.transcripts])
            stack.callback(producer.close, timeout=timeout_s)
        recognizer = SpeechRecognizer(settings.speech)
        stack.callback(recognizer.close)
        for window in file_windows(path, stream, settings.windows):
            transcript = recognizer.transcribe(window)
            out.write(transcript_line(transcript) + "\n")
            out.flush()
            if producer is not None:
                message = envelope("transcripts", transcript_message(transcript, replay=True))
                sends.append(send(producer, settings.kafka, message))
            log.info(
                "window %d %.2f-%.2f s (%s): %d words in %.0f ms",
                window.seq,
                window.start_s,
                window.end_s,
                window.closed_by,
                len(transcript.words),
                transcript.latency_ms,
            )
            transcripts.append(transcript)
        if producer is not None:
            _check(confirm(producer, sends, timeout_s), len(sends))
            log.info("published %d transcripts to %s", len(sends), settings.kafka.topics.transcripts)
    return transcripts


def _check(acks: Acks, sent: int) -> None:
    if acks.acked < sent:
        reason = acks.error or "no answer in time"
        retryable = acks.error is None or bool(getattr(acks.error, "retriable", False))
        raise PublishError(f"transcript {acks.acked} was not acknowledged: {reason}", retryable=retryable)
