"""A speaker's running voice reference (core/speaker_reference.py): what counts, how far back, per speaker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.audio_columns import AUDIO_DIM, PITCH_COLUMN, VOICED_COLUMN
from core.speaker_reference import (
    FLOOR_BELS,
    FRAMES,
    LEVEL_COLUMN,
    QUIET_LEVEL_BELS,
    ReferenceRecipe,
    SpeakerReference,
    SpeakerReferences,
    centred,
    counted_frames,
    own_reference,
    quiet_rows,
    reference_over,
    without_quiet_edges,
)
from core.types import Features, StreamId, Transcript, Window


def frames(n: int, level: float, value: float, voiced: bool = True) -> np.ndarray:
    """`n` frames whose every column is `value`, with the given level and voicing."""
    audio = np.full((n, AUDIO_DIM), value, np.float32)
    audio[:, LEVEL_COLUMN] = level
    audio[:, VOICED_COLUMN] = 1.0 if voiced else 0.0
    return audio


def test_only_loud_voiced_frames_count() -> None:
    audio = np.concatenate([frames(3, -2.0, 1.0), frames(3, FLOOR_BELS - 0.5, 5.0), frames(3, -2.0, 9.0, False)])
    assert counted_frames(audio).tolist() == [True] * 3 + [False] * 6
    assert own_reference(audio)[LEVEL_COLUMN] == pytest.approx(-2.0)
    assert own_reference(audio)[20] == pytest.approx(1.0)


def test_a_window_without_loud_voice_falls_back_to_its_voiced_then_all_frames() -> None:
    quiet = frames(4, FLOOR_BELS - 1.0, 3.0)
    assert own_reference(quiet)[20] == pytest.approx(3.0)
    unvoiced = np.concatenate([frames(2, -2.0, 2.0, False), frames(2, -2.0, 4.0, False)])
    assert own_reference(unvoiced)[20] == pytest.approx(3.0)


def test_the_first_window_is_its_own_reference_later_ones_hear_the_earlier_speech() -> None:
    reference = SpeakerReference()
    first = reference.add(frames(10, -2.0, 1.0))
    second = reference.add(frames(10, -2.0, 3.0))
    assert first[20] == pytest.approx(1.0)
    assert second[20] == pytest.approx(2.0)  # both windows, equally many counted frames
    silent = reference.add(frames(10, -6.0, 7.0))  # nothing counts: the reference so far
    assert silent[20] == pytest.approx(2.0)


def test_the_reference_forgets_speech_older_than_its_frame_budget() -> None:
    reference = SpeakerReference(frames=100)
    reference.add(frames(100, -2.0, 10.0))
    latest = reference.add(frames(100, -2.0, 0.0))
    assert latest[20] == pytest.approx(0.0)  # the older window no longer fits the budget
    assert reference_over([frames(50, -2.0, 1.0)] * (FRAMES // 50 + 4))[20] == pytest.approx(1.0)


def test_centring_subtracts_the_reference_from_the_named_columns_only() -> None:
    audio = frames(3, -2.0, 5.0)
    reference = np.full(AUDIO_DIM, 2.0, np.float32)
    out = centred(audio, reference, (LEVEL_COLUMN, 20))
    assert out[:, LEVEL_COLUMN] == pytest.approx(-4.0)
    assert out[:, 20] == pytest.approx(3.0)
    assert out[:, 21] == pytest.approx(5.0)
    assert audio[0, 20] == 5.0  # the input is not modified


def _features(audio: np.ndarray) -> Features:
    window = Window(StreamId("call", "p1"), 0, 0.0, 1.0, np.zeros(16000, np.float32), (), "utterance")
    ids = np.array([101, 102], np.int64)
    return Features(Transcript(window, "", (), "en", 0.0, 0.0), ids, np.ones(2, np.int64), np.zeros(2, np.int64),
                    audio, np.zeros((1, 2), np.float32), 1.0, 0.0, 0.0)


def test_each_speaker_has_their_own_reference_and_the_least_recent_is_forgotten() -> None:
    book = SpeakerReferences(capacity=2)
    assert book.add("call/a", frames(5, -2.0, 1.0))[20] == pytest.approx(1.0)
    assert book.add("call/b", frames(5, -2.0, 5.0))[20] == pytest.approx(5.0)
    assert book.add("call/a", frames(5, -2.0, 3.0))[20] == pytest.approx(2.0)
    book.add("call/c", frames(5, -2.0, 0.0))  # b was heard least recently
    assert len(book) == 2
    assert book.add("call/b", frames(5, -2.0, 7.0))[20] == pytest.approx(7.0)  # a new reference


def test_attach_sets_the_reference_only_on_the_agents_audio_descriptors() -> None:
    book = SpeakerReferences()
    attached = book.attach("call/a", _features(frames(4, -2.0, 1.0)))
    assert attached.audio_reference is not None and attached.audio_reference[20] == pytest.approx(1.0)
    assert book.attach("call/a", _features(np.zeros((0, AUDIO_DIM), np.float32))).audio_reference is None
    assert book.attach("call/a", _features(np.zeros((4, 3), np.float32))).audio_reference is None


def test_a_recipe_round_trips_and_names_what_differs_from_the_agent() -> None:
    recipe = ReferenceRecipe((0, 9, 10))
    assert ReferenceRecipe.from_dict(dataclasses.asdict(recipe)) == recipe  # as the card writes it
    assert recipe.differences() == []
    other = ReferenceRecipe((0, 99), floor_bels=-4.0, frames=FRAMES + 1)
    assert len(other.differences()) == 3
    with pytest.raises(ValueError, match="columns"):
        ReferenceRecipe.from_dict({"columns": [], "floor_bels": FLOOR_BELS, "frames": FRAMES})


def test_a_hum_louder_than_the_floor_does_not_count_beside_the_voice() -> None:
    # a room's mains hum is periodic (voiced) and can sit above the floor; a call's codec removes it
    voice, hum = frames(10, -1.0, 1.0), frames(30, -3.0, 9.0)
    audio = np.concatenate([voice, hum])
    assert counted_frames(audio).tolist() == [True] * 10 + [False] * 30
    assert own_reference(audio)[20] == pytest.approx(1.0)
    assert counted_frames(hum).all()  # alone, the hum is the loudest there is


def test_a_card_from_before_the_loudness_rule_is_told_apart() -> None:
    old = ReferenceRecipe.from_dict({"columns": [0], "floor_bels": FLOOR_BELS, "frames": FRAMES})
    assert old.loudest_within_bels is None
    assert any("loudest" in problem for problem in old.differences())


def test_pitch_is_relative_on_counted_frames_and_absent_on_the_others() -> None:
    # f0_oct is 0 where a frame has no pitch; a quiet voiced frame's pitch is often a room's hum, which a call's
    # codec leaves unvoiced, so it reads as "no pitch" too
    voice, hum, silence = frames(4, -1.0, 2.5), frames(3, -3.0, 0.5), frames(2, -2.0, 0.0, voiced=False)
    audio = np.concatenate([voice, hum, silence])
    reference = own_reference(audio)
    assert reference[PITCH_COLUMN] == pytest.approx(2.5)
    out = centred(audio, reference, (LEVEL_COLUMN, PITCH_COLUMN))
    assert out[:4, PITCH_COLUMN].tolist() == [0.0] * 4 and out[4:, PITCH_COLUMN].tolist() == [0.0] * 5
    higher = centred(audio, reference - 1.0, (LEVEL_COLUMN, PITCH_COLUMN))
    assert higher[:4, PITCH_COLUMN] == pytest.approx(1.0) and higher[4:, PITCH_COLUMN].tolist() == [0.0] * 5
    assert out[4:7, LEVEL_COLUMN] == pytest.approx(-2.0)  # the level is relative on every frame
    recipe = ReferenceRecipe.of((LEVEL_COLUMN, PITCH_COLUMN))
    assert recipe.counted_only == (PITCH_COLUMN,) and recipe.differences() == []
    assert ReferenceRecipe.from_dict(dataclasses.asdict(recipe)) == recipe
    # a card whose graph read the pitch on every frame is refused rather than served another input
    assert any("counted frames only" in p for p in ReferenceRecipe((LEVEL_COLUMN, PITCH_COLUMN)).differences())


def test_a_card_whose_reference_has_a_rule_this_agent_lacks_is_refused() -> None:
    data = dataclasses.asdict(ReferenceRecipe.of((LEVEL_COLUMN, PITCH_COLUMN)))
    with pytest.raises(ValueError, match=r"\['voiced_only'\], which this agent does not apply"):
        ReferenceRecipe.from_dict({**data, "voiced_only": [PITCH_COLUMN]})  # a rule of another agent's


def test_the_quiet_gate_gives_every_quiet_frame_one_row_whatever_the_room() -> None:
    # a pause's hum in a recording and the near-silence a call's codec leaves of it: different frames, one row
    voice = frames(4, -1.0, 2.5)
    hum, silence = frames(3, -3.0, 0.7), frames(3, -6.0, 0.0, voiced=False)
    recorded, called = np.concatenate([voice, hum]), np.concatenate([voice, silence])
    reference = own_reference(recorded)
    columns = (LEVEL_COLUMN, PITCH_COLUMN, 20)
    a = centred(recorded, reference, columns, quiet_gate=True)
    b = centred(called, reference, columns, quiet_gate=True)
    np.testing.assert_array_equal(a[4:], b[4:])
    assert a[4:, LEVEL_COLUMN].tolist() == [QUIET_LEVEL_BELS] * 3 and not a[4:, 21].any()
    np.testing.assert_array_equal(a[:4], centred(recorded, reference, columns)[:4])  # loud frames as before
    assert not np.array_equal(centred(recorded, reference, columns)[4:], centred(called, reference, columns)[4:])
    recipe = ReferenceRecipe.of(columns, quiet_gate=True)
    assert ReferenceRecipe.from_dict(dataclasses.asdict(recipe)) == recipe and recipe.differences() == []
    assert not ReferenceRecipe.from_dict({"columns": [0], "floor_bels": FLOOR_BELS, "frames": FRAMES}).quiet_gate


def test_trimming_quiet_edges_makes_the_window_start_and_end_not_matter() -> None:
    # the same words cut by the VAD 0.1 s earlier and later (as a call's codec moves it): one model input
    voice = np.concatenate([frames(4, -1.0, 2.5), frames(2, -6.0, 0.0, voiced=False), frames(3, -1.2, 1.5)])
    columns = (LEVEL_COLUMN, PITCH_COLUMN, 20)
    reference = own_reference(voice)
    cut = [np.concatenate([frames(lead, -5.0, 0.3, voiced=False), voice, frames(tail, -4.5, 0.2)])
           for lead, tail in ((0, 0), (5, 2), (11, 7))]
    gated = [centred(c, reference, columns, quiet_gate=True) for c in cut]
    assert len({len(g) for g in gated}) == 3  # without the trim the LSTM reads 9, 16 and 27 steps
    trimmed = [without_quiet_edges(g) for g in gated]
    for t in trimmed:
        np.testing.assert_array_equal(t, trimmed[0])
    assert len(trimmed[0]) == 9 and quiet_rows(trimmed[0]).tolist() == [False] * 4 + [True] * 2 + [False] * 3
    silence = centred(frames(5, -6.0, 0.0, voiced=False), reference, columns, quiet_gate=True)
    np.testing.assert_array_equal(without_quiet_edges(silence), silence)  # nothing loud: nothing to cut to
    np.testing.assert_array_equal(without_quiet_edges(silence, 3), silence)


def test_a_trim_with_edge_rows_gives_one_input_wherever_the_cut_fell() -> None:
    voice = np.concatenate([frames(4, -1.0, 2.5), frames(2, -6.0, 0.0, voiced=False), frames(3, -1.2, 1.5)])
    columns = (LEVEL_COLUMN, PITCH_COLUMN, 20)
    reference = own_reference(voice)

    def kept(lead: int, tail: int, keep: int) -> np.ndarray:
        cut = np.concatenate([frames(lead, -5.0, 0.3, voiced=False), voice, frames(tail, -4.5, 0.2)])
        return without_quiet_edges(centred(cut, reference, columns, quiet_gate=True), keep)

    # as many gated rows as the cut left, fewer, or none: the same rows, exactly `keep` of them at each edge
    edged = [kept(lead, tail, 3) for lead, tail in ((0, 0), (1, 5), (3, 3), (11, 7))]
    for k in edged:
        np.testing.assert_array_equal(k, edged[0])
    assert quiet_rows(edged[0]).tolist() == [True] * 3 + [False] * 4 + [True] * 2 + [False] * 3 + [True] * 3
    gated = centred(np.concatenate([frames(11, -5.0, 0.3, voiced=False), voice]), reference, columns, quiet_gate=True)
    np.testing.assert_array_equal(edged[0][:3], gated[:3])  # the row put back is the gate's own row
    np.testing.assert_array_equal(kept(0, 0, 0), kept(11, 7, 0))


def test_a_trim_without_the_gate_is_refused() -> None:
    recipe = ReferenceRecipe.of((LEVEL_COLUMN,), quiet_gate=True, trim_quiet_edges=True)
    assert ReferenceRecipe.from_dict(dataclasses.asdict(recipe)) == recipe
    with pytest.raises(ValueError, match="trim_quiet_edges needs quiet_gate"):
        ReferenceRecipe.from_dict({**dataclasses.asdict(recipe), "quiet_gate": False})
    kept = ReferenceRecipe.of((LEVEL_COLUMN,), quiet_gate=True, trim_quiet_edges=True, quiet_edge_rows=8)
    assert ReferenceRecipe.from_dict(dataclasses.asdict(kept)) == kept and kept.differences() == []
    for bad in ({"quiet_edge_rows": -1}, {"quiet_edge_rows": 8, "trim_quiet_edges": False}):
        with pytest.raises(ValueError, match="quiet_edge_rows must be >= 0, and is read only with trim_quiet_edges"):
            ReferenceRecipe.from_dict({**dataclasses.asdict(kept), **bad})
