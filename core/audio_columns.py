"""The names and order of the agent's acoustic descriptor columns (computed by core/features_audio.py).

Kept apart from the DSP so that what only needs to know the columns (the model card's speaker reference, a
consumer) does not import librosa.
"""

from __future__ import annotations

N_MFCC = 20

AUDIO_COLUMNS: tuple[str, ...] = (
    "log_energy_b",
    "zcr",
    "f0_oct",
    "periodicity",
    "voiced",
    "centroid_khz",
    "bandwidth_khz",
    "rolloff_khz",
    "flatness",
    *(f"mfcc_{i}" for i in range(N_MFCC)),
)
AUDIO_DIM = len(AUDIO_COLUMNS)
VOICED_COLUMN = AUDIO_COLUMNS.index("voiced")
LEVEL_COLUMN = AUDIO_COLUMNS.index("log_energy_b")
PITCH_COLUMN = AUDIO_COLUMNS.index("f0_oct")  # 0 where the frame is unvoiced
