"""A speaker's acoustic reference: the mean descriptors of their recent loud voiced frames.

A window's level and cepstrum say as much about the microphone, its gain and the codec as about the voice. A
model that reads them relative to the same speaker's own speech hears how this speaker sounds *now* against how
they sound in general (docs/selfmm.md §2.7). The agent keeps one `SpeakerReference` per participant stream
(`SpeakerReferences`, owned by the pipeline); the build computes the same reference for each training clip from
other clips of the same actor; a model card's `audio_reference` names the columns its graph expects centred
this way, and the bundle subtracts the reference before the graph (agent/bundle.py `ModelBundle.prepare`).

Only voiced frames above `FLOOR_BELS` and within `LOUDEST_WITHIN_BELS` of the window's loudest voiced frames
count: quiet voiced frames are mostly the codec's comfort noise and the room (a recording's mains hum is periodic
and can be louder than the floor), which a call's codec treats otherwise than a file, so counting them moved the
reference with the transport (docs/selfmm.md §2.7).

The pitch column is read only on the frames a reference counts and is 0 ("no pitch") on the others: a quiet
voiced frame's pitch is as often the room's hum as the voice, and a call's codec leaves it unvoiced.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from core.audio_columns import AUDIO_COLUMNS, LEVEL_COLUMN, PITCH_COLUMN, VOICED_COLUMN
from core.types import Features

FLOOR_BELS = -3.75  # -37.5 dBFS: frames quieter than this do not count (docs/selfmm.md §2.7)
# and only frames within 15 dB of the window's loudest voiced frames (their 95th percentile level): a room's hum
# can be louder than the floor and periodic, and a call's codec removes it (docs/selfmm.md §2.7)
LOUDEST_WITHIN_BELS = 1.5
FRAMES = 500  # the reference spans the speaker's latest 500 counted frames (10 s of loud voiced speech)
SPEAKERS = 4096  # references kept per process; the least recently heard speaker is forgotten first
COUNTED_ONLY_COLUMNS = (PITCH_COLUMN,)  # columns `centred` keeps on counted frames only (0 on the others)
QUIET_LEVEL_BELS = -2.0  # the quiet gate's row: every column 0, the level 20 dB under the reference


@dataclass(frozen=True, slots=True)
class ReferenceRecipe:
    """Which columns a model reads relative to the speaker, and how the reference is taken (on the card)."""

    columns: tuple[int, ...]
    floor_bels: float = FLOOR_BELS
    frames: int = FRAMES
    loudest_within_bels: float | None = LOUDEST_WITHIN_BELS  # None: every voiced frame above the floor counts
    counted_only: tuple[int, ...] = ()  # of `columns`, those read on counted frames only (0 on the others)
    quiet_gate: bool = False  # frames not within loudest_within_bels of the window's loudest become one fixed row
    trim_quiet_edges: bool = False  # the gated frames before the first and after the last loud one are dropped
    quiet_edge_rows: int = 0  # ... and this many gated rows put back at each edge (`without_quiet_edges`)

    @classmethod
    def of(
        cls, columns: Sequence[int], *, quiet_gate: bool = False, trim_quiet_edges: bool = False,
        quiet_edge_rows: int = 0,
    ) -> ReferenceRecipe:
        """The recipe this agent applies to `columns`."""
        return cls(tuple(columns), counted_only=tuple(c for c in columns if c in COUNTED_ONLY_COLUMNS),
                   quiet_gate=quiet_gate, trim_quiet_edges=trim_quiet_edges, quiet_edge_rows=quiet_edge_rows)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceRecipe:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:  # a newer agent's rule: scoring without it would feed the graph other inputs than it learned
            raise ValueError(f"audio_reference has {unknown}, which this agent does not apply: a newer agent's card")
        columns = data["columns"]
        if not isinstance(columns, list | tuple) or not columns:
            raise ValueError("audio_reference.columns must be a non-empty list of column indexes")
        within = data.get("loudest_within_bels")
        recipe = cls(tuple(int(c) for c in columns), float(data["floor_bels"]), int(data["frames"]),
                     None if within is None else float(within), tuple(int(c) for c in data.get("counted_only", ())),
                     bool(data.get("quiet_gate", False)), bool(data.get("trim_quiet_edges", False)),
                     int(data.get("quiet_edge_rows", 0)))
        if recipe.trim_quiet_edges and not recipe.quiet_gate:
            raise ValueError("audio_reference.trim_quiet_edges needs quiet_gate: the edges trimmed are gated frames")
        if recipe.quiet_edge_rows < 0 or (recipe.quiet_edge_rows and not recipe.trim_quiet_edges):
            raise ValueError("audio_reference.quiet_edge_rows must be >= 0, and is read only with trim_quiet_edges")
        return recipe

    def differences(self) -> list[str]:
        """How this recipe differs from the one this agent computes (empty: the same)."""
        problems = []
        if self.floor_bels != FLOOR_BELS:
            problems.append(f"floor {self.floor_bels} B, the agent's {FLOOR_BELS} B")
        if self.frames != FRAMES:
            problems.append(f"{self.frames} frames, the agent's {FRAMES}")
        if self.loudest_within_bels != LOUDEST_WITHIN_BELS:
            problems.append(f"frames within {self.loudest_within_bels} B of the window's loudest, the agent's "
                            f"{LOUDEST_WITHIN_BELS} B")
        agents = ReferenceRecipe.of(self.columns).counted_only
        if self.counted_only != agents:
            problems.append(f"columns {list(self.counted_only)} read on counted frames only, the agent reads "
                            f"{list(agents)} so")
        bad = [c for c in self.columns if not 0 <= c < len(AUDIO_COLUMNS)]
        if bad:
            problems.append(f"columns {bad} outside the agent's {len(AUDIO_COLUMNS)} audio columns")
        return problems


def loud_frames(audio: np.ndarray) -> np.ndarray:
    """Mask [T] of the frames louder than FLOOR_BELS and within LOUDEST_WITHIN_BELS of the window's loudest voiced
    frames (their 95th percentile level); none when no frame is voiced."""
    voiced = audio[:, VOICED_COLUMN] > 0.5
    if not voiced.any():
        return voiced
    loudest = float(np.percentile(audio[voiced, LEVEL_COLUMN], 95))
    return audio[:, LEVEL_COLUMN] > max(FLOOR_BELS, loudest - LOUDEST_WITHIN_BELS)


def counted_frames(audio: np.ndarray, loud: np.ndarray | None = None) -> np.ndarray:
    """Mask [T] of the frames a reference counts: voiced and loud (`loud`, else `loud_frames`)."""
    return (audio[:, VOICED_COLUMN] > 0.5) & (loud_frames(audio) if loud is None else loud)


def own_reference(audio: np.ndarray) -> np.ndarray:
    """A window's reference from its own frames alone: counted frames, else voiced ones, else all (float32 [D])."""
    for mask in (counted_frames(audio), audio[:, VOICED_COLUMN] > 0.5):
        if mask.any():
            return audio[mask].mean(axis=0, dtype=np.float64).astype(np.float32)
    return audio.mean(axis=0, dtype=np.float64).astype(np.float32)


class SpeakerReference:
    """The running reference of one speaker: the mean of their latest FRAMES counted frames, window by window."""

    def __init__(self, frames: int = FRAMES) -> None:
        self._frames = frames
        self._windows: deque[tuple[np.ndarray, int]] = deque()  # per window: sum [D] (float64), count
        self._sum: np.ndarray | None = None
        self._count = 0

    def add(self, audio: np.ndarray) -> np.ndarray:
        """Take in one window's frames [T, D]; the reference for that window (float32 [D]), its own frames
        included, so a speaker's first window has one."""
        counted = audio[counted_frames(audio)].astype(np.float64)
        if len(counted):
            total = counted.sum(axis=0)
            self._windows.append((total, len(counted)))
            self._sum = total if self._sum is None else self._sum + total
            self._count += len(counted)
            while len(self._windows) > 1 and self._count - self._windows[0][1] >= self._frames:
                old, n = self._windows.popleft()
                self._sum = self._sum - old
                self._count -= n
        if self._sum is None:
            return own_reference(audio)
        return (self._sum / self._count).astype(np.float32)


def reference_over(windows: Iterable[np.ndarray]) -> np.ndarray:
    """The reference after hearing `windows` [T, D] in order (the build's reference for a clip)."""
    reference = SpeakerReference()
    result: np.ndarray | None = None
    for audio in windows:
        result = reference.add(audio)
    if result is None:
        raise ValueError("reference_over needs at least one window")
    return result


def centred(
    audio: np.ndarray, reference: np.ndarray, columns: Sequence[int], *, quiet_gate: bool = False
) -> np.ndarray:
    """`audio` [T, D] with `reference` [D] subtracted from `columns` (a new float32 array); a COUNTED_ONLY_COLUMNS
    column only on the window's counted frames, and 0 on the others. With `quiet_gate`, every frame that is not
    loud (`loud_frames`) becomes the same row: 0, and QUIET_LEVEL_BELS in the level column. What a room, its hum
    and a codec make of a pause then reaches no model (docs/selfmm.md §2.7)."""
    out = np.array(audio, dtype=np.float32, copy=True)
    everywhere = [c for c in columns if c not in COUNTED_ONLY_COLUMNS]
    out[:, everywhere] -= reference[everywhere]
    only = [c for c in columns if c in COUNTED_ONLY_COLUMNS]
    if not (only or quiet_gate):
        return out
    loud = loud_frames(audio)
    if only:
        counted = counted_frames(audio, loud)
        out[:, only] = np.where(counted[:, None], out[:, only] - reference[only], 0.0)
    if quiet_gate:
        out[~loud] = quiet_row(out.shape[1])
    return out


def quiet_row(dim: int) -> np.ndarray:
    """The quiet gate's row (float32 [dim]): every column 0, QUIET_LEVEL_BELS in the level column."""
    row = np.zeros(dim, dtype=np.float32)
    row[LEVEL_COLUMN] = QUIET_LEVEL_BELS
    return row


def quiet_rows(audio: np.ndarray) -> np.ndarray:
    """Mask [T] of the rows of a `centred(..., quiet_gate=True)` window that are the quiet gate's row."""
    return (audio == quiet_row(audio.shape[1])).all(axis=1)


def without_quiet_edges(audio: np.ndarray, keep: int = 0) -> np.ndarray:
    """A gated window (`centred(..., quiet_gate=True)`) from its first to its last loud frame, with exactly `keep`
    gated rows before and after (the gate's one row, however many the cut left); unchanged when no
    frame is loud. Where the VAD opens and closes a window moves with the codec (seen: 0.22 s), and a graph that
    averages fixed blocks of frames reads where its blocks fall: a GRID clip's A was 1.07 apart between its call and
    its file through that alone, and 0.63 when the edges kept at most 8 rows and a call's window opened 0.1 s later
    (docs/selfmm.md §2.7). The pauses inside a window are kept."""
    loud = np.flatnonzero(~quiet_rows(audio))
    if len(loud) == 0:
        return audio
    speech = audio[loud[0]: loud[-1] + 1]
    if keep <= 0:
        return speech
    edge = np.repeat(quiet_row(audio.shape[1])[None].astype(audio.dtype), keep, axis=0)
    return np.concatenate([edge, speech, edge])


class SpeakerReferences:
    """One SpeakerReference per speaker key (a participant stream), the least recently heard forgotten first.

    Kept for the process's life, so a participant who reconnects to the same call keeps their reference."""

    def __init__(self, capacity: int = SPEAKERS) -> None:
        self._capacity = capacity
        self._by_key: OrderedDict[str, SpeakerReference] = OrderedDict()

    def add(self, key: str, audio: np.ndarray) -> np.ndarray:
        reference = self._by_key.pop(key, None) or SpeakerReference()
        self._by_key[key] = reference
        while len(self._by_key) > self._capacity:
            self._by_key.popitem(last=False)
        return reference.add(audio)

    def attach(self, key: str, features: Features) -> Features:
        """`features` with the reference of speaker `key` after hearing this window (unchanged when the window
        has no frames of the agent's audio descriptors: a shed window, another extractor's features)."""
        audio = features.audio
        if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] != len(AUDIO_COLUMNS):
            return features
        return replace(features, audio_reference=self.add(key, audio))

    def __len__(self) -> int:
        return len(self._by_key)
