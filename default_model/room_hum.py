"""A recording's room: mains hum and a noise floor added to a clean clip (a training augmentation only).

CREMA-D's pauses are quiet; other recordings' are not. GRID's carry 60 Hz hum at about -42 dBFS, which the
acoustic descriptors call voiced, and which a call's Opus VOIP then removes (core.call_codec). A model that only
ever heard quiet pauses scores such windows by their hum. Training rows with hum and noise at random levels
(seeded by the clip, so the feature cache stays valid) teach the audio head that the pauses are not the voice.
"""

from __future__ import annotations

import zlib

import numpy as np

from core.resample import SAMPLE_RATE_HZ

ROOM_HUM = "room-hum"  # names the augmentation in caches and model cards
HUM_DBFS = (-50.0, -35.0)  # RMS of the hum (GRID's: about -42)
NOISE_DBFS = (-70.0, -50.0)  # RMS of the white noise floor
HARMONICS = 5


def add_room_hum(audio: np.ndarray, key: str) -> np.ndarray:
    """`audio` (16 kHz float32) plus 50 or 60 Hz hum with random harmonics and a white noise floor, at random
    levels; the same `key` always draws the same room."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    t = np.arange(samples.size) / SAMPLE_RATE_HZ
    mains = float(rng.choice([50.0, 60.0]))
    hum = np.zeros(samples.size)
    for k in range(1, HARMONICS + 1):
        hum += rng.uniform(0.0, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0.0, 2 * np.pi))
    hum /= max(float(np.sqrt(np.mean(hum**2))), 1e-9)
    noise = rng.standard_normal(samples.size)
    room = hum * 10 ** (rng.uniform(*HUM_DBFS) / 20) + noise * 10 ** (rng.uniform(*NOISE_DBFS) / 20)
    return (samples + room).astype(np.float32)
