"""Frame-level acoustic descriptors of 16 kHz mono audio (numpy + librosa, no torch).

One row every 20 ms (50 frames/s, frames centred on multiples of the hop, so ``1 + n // 320`` rows for
``n`` samples). Columns, in this order (``core.audio_columns.AUDIO_COLUMNS``):

====  ===================  =================================================================
 0    log_energy_b          frame RMS in bels re full scale (dBFS / 10), floor -10 (-100 dBFS)
 1    zcr                   zero-crossing rate (fraction of sample pairs, 0..1)
 2    f0_oct                YIN f0 in octaves above 27.5 Hz (A0); 0 when the frame is unvoiced
 3    periodicity           normalised autocorrelation at the YIN period, clipped to 0..1
 4    voiced                1 when periodicity >= 0.6 and energy above -55 dBFS, else 0
 5    centroid_khz          spectral centroid (kHz)
 6    bandwidth_khz         spectral bandwidth, p=2 (kHz)
 7    rolloff_khz           85 % spectral roll-off (kHz)
 8    flatness              spectral flatness (0..1)
 9-28 mfcc_0 .. mfcc_19     HTK-mel (40 bands, 0-8 kHz) cepstrum of log power, divided by 10
====  ===================  =================================================================

Every value is computed from the window's own samples with fixed constants (no per-window normalisation
such as top-dB clipping), so the same samples always give the same numbers.

With ``highpass_hz`` (a feature spec's ``audio_highpass_hz``) the samples first lose what lies below it: a
WebRTC call's Opus removes everything under ~60 Hz, where a recording keeps its mains hum and rumble, and the
frames' levels then differ by ~0.5-0.9 bel between a clip's file and its call (docs/selfmm.md §2.7, "the hum
under 60 Hz").
"""

from __future__ import annotations

import logging
import threading

import librosa
import numpy as np
import scipy.fft
import scipy.signal

from core.audio_columns import AUDIO_DIM, N_MFCC, VOICED_COLUMN

log = logging.getLogger(__name__)

AUDIO_EXTRACTOR = "librosa-lld"
AUDIO_VERSION = 1
SAMPLE_RATE_HZ = 16_000
HOP = 320  # 20 ms
N_FFT = 512
WIN = 400  # 25 ms Hann
YIN_FRAME = 640  # 40 ms; YIN window 320, so periods up to 319 samples (f0 >= 50.2 Hz)
F0_MIN_HZ = 60.0
F0_MAX_HZ = 500.0
N_MELS = 40
VOICED_PERIODICITY = 0.6
VOICED_FLOOR_DB = -55.0
FRAME_RATE_HZ = SAMPLE_RATE_HZ / HOP
HIGHPASS_ORDER = 4  # Butterworth, run forwards and backwards (zero phase: the frames keep their timing)
NO_HIGHPASS = 0.0


_MEL_BASIS = librosa.filters.mel(
    sr=SAMPLE_RATE_HZ, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE_HZ / 2, htk=True
).astype(np.float32)  # [40, 257]
_warm_lock = threading.Lock()
_warm = False


def n_audio_frames(n_samples: int) -> int:
    """Rows produced for ``n_samples`` samples (at least one)."""
    return 1 + max(n_samples, 1) // HOP


def _check(samples: np.ndarray) -> np.ndarray:
    if not isinstance(samples, np.ndarray) or samples.ndim != 1:
        raise ValueError("audio must be a 1-D numpy array of 16 kHz mono samples")
    if samples.dtype != np.float32:
        raise ValueError(f"audio must be float32, got {samples.dtype}")
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio contains NaN or infinite samples")
    if samples.size < YIN_FRAME:  # short windows: trailing zeros, exactly what centred framing pads with
        return np.pad(samples, (0, YIN_FRAME - samples.size))
    return samples


def _periodicity(y: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation of each YIN frame at its own period (float32 [T])."""
    padded = np.pad(y, YIN_FRAME // 2)
    frames = librosa.util.frame(padded, frame_length=YIN_FRAME, hop_length=HOP, axis=0)  # [T, 640]
    frames = frames[: len(f0_hz)]
    width = YIN_FRAME // 2
    lag = np.clip(np.rint(SAMPLE_RATE_HZ / f0_hz).astype(np.int64), 1, YIN_FRAME - width)
    head = frames[:, :width].astype(np.float64)
    idx = np.arange(width)[None, :] + lag[:, None]
    tail = np.take_along_axis(frames, idx, axis=1).astype(np.float64)
    num = np.sum(head * tail, axis=1)
    den = np.sqrt(np.sum(head * head, axis=1) * np.sum(tail * tail, axis=1)) + 1e-12
    return np.clip(num / den, 0.0, 1.0).astype(np.float32)


def high_passed(samples: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """float32 16 kHz mono `samples` without what lies below `cutoff_hz` (zero phase, same length)."""
    if cutoff_hz <= NO_HIGHPASS or samples.size < 2:
        return samples
    sos = scipy.signal.butter(HIGHPASS_ORDER, cutoff_hz, "highpass", fs=SAMPLE_RATE_HZ, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), samples.size - 1)  # scipy's default, shortened for very short windows
    return scipy.signal.sosfiltfilt(sos, samples, padlen=padlen).astype(np.float32)


def audio_features(samples: np.ndarray, highpass_hz: float = NO_HIGHPASS) -> np.ndarray:
    """Acoustic descriptors of float32 16 kHz mono audio: float32 [1 + n // 320, 29] (see module doc)."""
    y = high_passed(_check(samples), highpass_hz)
    n_frames = n_audio_frames(samples.size)
    stft = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, win_length=WIN, center=True, pad_mode="constant")
    mag = np.abs(stft).astype(np.float32)[:, :n_frames]  # [257, T]
    power = mag * mag
    rms = librosa.feature.rms(y=y, frame_length=WIN, hop_length=HOP, center=True, pad_mode="constant")[0]
    energy_db = 20.0 * np.log10(rms[:n_frames].astype(np.float64) + 1e-5)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=WIN, hop_length=HOP, center=True)[0][:n_frames]
    f0 = librosa.yin(
        y,
        fmin=F0_MIN_HZ,
        fmax=F0_MAX_HZ,
        sr=SAMPLE_RATE_HZ,
        frame_length=YIN_FRAME,
        hop_length=HOP,
        center=True,
        pad_mode="constant",
    )[:n_frames]
    periodicity = _periodicity(y, f0)
    voiced = (periodicity >= VOICED_PERIODICITY) & (energy_db > VOICED_FLOOR_DB)
    f0_oct = np.where(voiced, np.log2(f0 / 27.5), 0.0)
    spectral = _spectral(mag)
    logmel = 10.0 * np.log10(np.maximum(_MEL_BASIS @ power, 1e-10))  # [40, T]
    mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=0)[:N_MFCC] / 10.0
    out = np.empty((n_frames, AUDIO_DIM), dtype=np.float32)
    out[:, 0] = energy_db / 10.0
    out[:, 1] = zcr
    out[:, 2] = f0_oct
    out[:, 3] = periodicity
    out[:, 4] = voiced
    out[:, 5:9] = spectral
    out[:, 9:] = mfcc.T
    return out


def _spectral(mag: np.ndarray) -> np.ndarray:
    """Centroid, bandwidth, roll-off (kHz) and flatness per frame: float [T, 4]."""
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE_HZ, n_fft=N_FFT)
    centroid = librosa.feature.spectral_centroid(S=mag, freq=freqs)[0]
    bandwidth = librosa.feature.spectral_bandwidth(S=mag, freq=freqs, centroid=centroid[None, :])[0]
    rolloff = librosa.feature.spectral_rolloff(S=mag, freq=freqs, roll_percent=0.85)[0]
    flatness = librosa.feature.spectral_flatness(S=mag, power=2.0)[0]
    return np.stack([centroid / 1000.0, bandwidth / 1000.0, rolloff / 1000.0, flatness], axis=1)


def speech_ratio(audio: np.ndarray) -> float:
    """Fraction of voiced frames in an ``audio_features`` matrix."""
    if audio.shape[0] == 0:
        return 0.0
    return float(np.mean(audio[:, VOICED_COLUMN]))


def warm_up() -> None:
    """Run the extractor once so librosa's numba JIT cost is paid at start-up, not on a live window."""
    global _warm
    with _warm_lock:
        if _warm:
            return
        rng = np.random.default_rng(0)
        audio_features((0.01 * rng.standard_normal(SAMPLE_RATE_HZ)).astype(np.float32))
        _warm = True
