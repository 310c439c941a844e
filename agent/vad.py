"""Voice activity: per-frame speech probabilities for one stream, fed samples in any chunk sizes.

The real detector is Silero VAD v6 as bundled (ONNX) with faster-whisper: no torch. The ONNX session is
shared by every stream in the process; each `SileroVad` holds only its stream's recurrent state, so feeding a
stream in pieces gives exactly the probabilities of one call over the whole stream.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
from abc import ABC, abstractmethod

import numpy as np
import onnxruntime
from faster_whisper.utils import get_assets_path

from core.errors import ModelError
from core.types import SAMPLE_RATE_HZ

SILERO_FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the only frame size Silero v6 accepts at this rate
_SILERO_CONTEXT_SAMPLES = 64
_SILERO_STATE_SHAPE = (1, 1, 128)


class VoiceActivityDetector(ABC):
    """Buffers one stream's samples into fixed frames and scores each complete frame once, in order.

    A process holds one detector per model and each stream works on `new_stream()`: a copy with fresh state
    that shares the model.
    """

    def __init__(self, frame_samples: int) -> None:
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.frame_samples = frame_samples
        self._pending = np.zeros(0, dtype=np.float32)  # float32 [< frame_samples] 16 kHz
        self.frames_done = 0

    @property
    def frame_s(self) -> float:
        return self.frame_samples / SAMPLE_RATE_HZ

    def speech_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities (float32 [k]) for the k frames completed by `samples` (float32 [n] 16 kHz)."""
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        complete = len(data) // self.frame_samples * self.frame_samples
        self._pending = data[complete:]
        if complete == 0:
            return np.zeros(0, dtype=np.float32)
        frames = data[:complete].reshape(-1, self.frame_samples)
        probs = np.asarray(self._score(frames), dtype=np.float32).reshape(-1)
        self.frames_done += len(probs)
        return probs

    def new_stream(self) -> VoiceActivityDetector:
        """A detector with fresh per-stream state sharing this one's model."""
        clone = copy.copy(self)
        clone.reset()
        return clone

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_done = 0
        self._reset_state()

    @abstractmethod
    def _score(self, frames: np.ndarray) -> np.ndarray:
        """Speech probability of each frame (float32 [k, frame_samples] → [k]), frames in stream order."""

    def _reset_state(self) -> None:  # noqa: B027 - stateless detectors have nothing to reset
        """Forget recurrent state."""


class SileroVad(VoiceActivityDetector):
    """Silero VAD v6 (faster-whisper's bundled ONNX model) for one stream."""

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(SILERO_FRAME_SAMPLES)
        self._session = _silero_session(model_path or _bundled_model_path())
        self._reset_state()

    def _reset_state(self) -> None:
        self._h = np.zeros(_SILERO_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_SILERO_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_SILERO_CONTEXT_SAMPLES, dtype=np.float32)

    def _score(self, frames: np.ndarray) -> np.ndarray:
        # Each frame is scored with the 64 samples before it; h/c carry the stream's state between calls.
        previous = np.vstack([self._context[None, :], frames[:-1, -_SILERO_CONTEXT_SAMPLES:]])
        batch = np.concatenate([previous, frames], axis=1).astype(np.float32, copy=False)
        probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = frames[-1, -_SILERO_CONTEXT_SAMPLES:].copy()
        return np.asarray(probs).reshape(-1)


def _bundled_model_path() -> str:
    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


_session_lock = threading.Lock()


@functools.cache
def _load_session(model_path: str):  # type: ignore[no-untyped-def]

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1  # frames come a few at a time: threads would only add overhead
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types for missing or bad files
        raise ModelError(f"cannot load the Silero VAD model {model_path}: {exc}") from exc


def _silero_session(model_path: str):  # type: ignore[no-untyped-def]
    """One ONNX session per model file per process, shared by all streams (run() is thread-safe)."""
    with _session_lock:
        return _load_session(model_path)
