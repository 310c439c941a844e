"""`affectstream transcribe FILE`: decode, window and transcribe a recording into JSON lines (and Kafka)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import typer
from kafka import KafkaProducer
from kafka.errors import KafkaError

from agent.errors import BrokerError, PublishError
from agent.kafka_config import producer_kwargs
from agent.messages import envelope, transcript_message
from agent.settings import Settings, WindowSettings
from agent.speech import SpeechRecognizer
from agent.topics import ensure_topics
from agent.transcripts_io import stream_for_file, transcript_line
from agent.vad import SileroVad
from agent.windows import Windower
from cli.options import build_settings
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


def transcribe_file(
    path: Path, settings: Settings, out: TextIO, *, publish: bool = False
) -> list[Transcript]:
    """Transcribe every window of `path`, write one JSON line each to `out`, publish them if asked."""

    info = probe(path)  # a bad file fails here, before the model loads
    if not info.has_audio:
        raise NoAudioError(str(path), "has no audio track: nothing to transcribe")
    stream = stream_for_file(path)
    recognizer = SpeechRecognizer(settings.speech)
    publisher = _TranscriptProducer(settings) if publish else None
    transcripts: list[Transcript] = []
    try:
        for window in file_windows(path, stream, settings.windows):
            transcript = recognizer.transcribe(window)
            out.write(transcript_line(transcript) + "\n")
            out.flush()
            if publisher is not None:
                publisher.send(transcript)
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
        if publisher is not None:
            publisher.flush()
    finally:
        recognizer.close()
        if publisher is not None:
            publisher.close()
    return transcripts


class _TranscriptProducer:
    """Blocking keyed producer (acks=all) for affect.transcripts; every send is confirmed at flush()."""

    def __init__(self, settings: Settings) -> None:


        self._topic = settings.kafka.topics.transcripts
        ensure_topics(settings.kafka, [self._topic])
        try:
            self._producer = KafkaProducer(**producer_kwargs(settings.kafka, settings.publish))
        except KafkaError as exc:
            raise BrokerError(
                f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}", retryable=True
            ) from exc
        self._timeout_s = settings.publish.delivery_timeout_s
        self._futures: list[Any] = []

    def send(self, transcript: Transcript) -> None:

        message = envelope("transcripts", transcript_message(transcript, replay=True))
        self._futures.append(
            self._producer.send(
                self._topic, key=message.key.encode(), value=message.value, headers=list(message.headers)
            )
        )

    def flush(self) -> None:


        self._producer.flush(timeout=self._timeout_s)
        for number, future in enumerate(self._futures):
            try:
                future.get(timeout=self._timeout_s)
            except KafkaError as exc:
                raise PublishError(
                    f"transcript {number} was not acknowledged: {exc}", retryable=exc.retriable
                ) from exc
        log.info("published %d transcripts to %s", len(self._futures), self._topic)
        self._futures.clear()

    def close(self) -> None:
        self._producer.close(timeout=self._timeout_s)


def register(app: typer.Typer) -> None:
    @app.command("transcribe")
    def transcribe(
        file: Annotated[Path, typer.Argument(help="a recording: mp4, flv, mpg, wav, flac, mp3, ...")],
        mode: Annotated[
            Literal["utterance", "fixed"] | None,
            typer.Option(help="windowing mode (default: windows.mode setting)"),
        ] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="write JSON lines here")] = None,
        publish: Annotated[
            bool, typer.Option("--publish", help="also send each transcript to the affect.transcripts topic")
        ] = False,
    ) -> None:
        """Transcribe a recording: one JSON line per window (seq, start_s, end_s, closed_by, text, words)."""

        settings = build_settings()
        if mode is not None:
            settings.windows.mode = mode
        if output is None:
            transcripts = transcribe_file(file, settings, sys.stdout, publish=publish)
        else:
            with output.open("w", encoding="utf-8") as handle:
                transcripts = transcribe_file(file, settings, handle, publish=publish)
        log.info("%s: %d windows transcribed", file, len(transcripts))
