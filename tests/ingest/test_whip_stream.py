"""Real recordings streamed over real WebRTC (aiortc on loopback) through the WHIP endpoint."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
import av
import numpy as np
import pytest
from whip_testing import (
    GRID_CLIP,
    SPEECH_CLIP,
    TOKEN,
    RawPeer,
    ServerFactory,
    ToneTrack,
    best_envelope_correlation,
    decode_audio_16k,
    decode_frames,
    stream_url,
)

from agent import sessions
from agent.stream_client import encode_recording, stream_file, stream_recording
from core.types import SAMPLE_RATE_HZ

pytestmark = pytest.mark.integration


def _check_audio(
    chunks: list, reference: np.ndarray, *, tolerance_s: float = 0.1
) -> tuple[float, float, int]:
    assert chunks, "no audio arrived"
    position = 0.0
    for chunk in chunks:  # contiguous and monotonic media time, 16 kHz mono float32
        assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
        assert chunk.start_s == pytest.approx(position, abs=1e-6)
        position = chunk.end_s
    received = np.concatenate([c.samples for c in chunks])
    duration_s = len(received) / SAMPLE_RATE_HZ
    assert abs(duration_s - len(reference) / SAMPLE_RATE_HZ) <= tolerance_s
    r, lag = best_envelope_correlation(received, reference)
    assert r > 0.8, f"envelope correlation {r:.3f} at lag {lag * 10} ms"
    assert abs(lag) <= 5, f"audio shifted by {lag * 10} ms in media time"
    return duration_s, r, lag


async def test_av_recording_arrives_complete_in_media_time(whip_server: ServerFactory) -> None:
    server, url, collector = await whip_server(vision_fps=10.0)
    result = await stream_file(GRID_CLIP, stream_url(url), TOKEN)
    session = await collector.ended("call-1/p1")
    assert session.closed == "delete" and session.stream.role == "patient"
    assert result.video_frames >= 70  # 25 fps for 3 s went out

    _, r, lag = _check_audio(collector.audio("call-1/p1"), decode_audio_16k(GRID_CLIP))
    frames = collector.frames("call-1/p1")
    times = [f.time_s for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert 0.8 * 10 * 3.0 <= len(frames) <= 10 * 3.0 + 1  # sampled to <= vision_fps
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape == (288, 360, 3) for f in frames)
    # each frame shows the picture the file has at that media time (VP8 loss allowed)
    reference = decode_frames(GRID_CLIP)
    for frame in frames[::5]:
        t, expected = min(reference, key=lambda item: abs(item[0] - frame.time_s))
        assert abs(t - frame.time_s) < 0.021
        assert np.mean(np.abs(frame.rgb.astype(int) - expected.astype(int))) < 6  # measured ~2
    # one sequence in media-time order: a frame comes before the audio that passes its time
    keys = [item.end_s if hasattr(item, "samples") else item.time_s for item in collector.media["call-1/p1"]]
    assert keys == sorted(keys)
    stats = session.stats()
    assert stats.audio_input_rate_hz == 48_000 and stats.video_frames_dropped == 0
    assert stats.video_frames_sampled == len(frames)
    assert server.active_sessions == 0


async def test_pre_encoded_recording_arrives_like_the_file(whip_server: ServerFactory) -> None:
    """The load-test client: packets encoded once (Opus + VP8) and sent as they are reach the session as the
    file's own media, in media time, like `stream_file`'s."""
    _, url, collector = await whip_server(vision_fps=10.0)
    recording = encode_recording(GRID_CLIP)
    assert [p.is_keyframe for p in recording.video[:2]] == [True, False]
    results = await asyncio.gather(
        stream_recording(recording, stream_url(url, participant_id="a"), TOKEN),
        stream_recording(recording, stream_url(url, participant_id="b"), TOKEN),
    )  # the same packets, two sessions at once
    assert all(r.audio_s == pytest.approx(recording.audio_s, abs=0.02) for r in results)
    assert all(r.video_frames == len(recording.video) for r in results)
    reference = decode_frames(GRID_CLIP)
    for key in ("call-1/a", "call-1/b"):
        session = await collector.ended(key)
        assert session.closed == "delete"
        _check_audio(collector.audio(key), decode_audio_16k(GRID_CLIP))
        frames = collector.frames(key)
        assert 0.8 * 10 * 3.0 <= len(frames) <= 10 * 3.0 + 1
        for frame in frames[::5]:
            t, expected = min(reference, key=lambda item: abs(item[0] - frame.time_s))
            assert abs(t - frame.time_s) < 0.021
            assert np.mean(np.abs(frame.rgb.astype(int) - expected.astype(int))) < 6
        stats = session.stats()
        assert stats.audio_input_rate_hz == 48_000
        # the receiver completes a frame when the next one starts: the last is never decoded
        assert stats.video_frames_received == len(recording.video) - 1


@pytest.mark.parametrize("codec", ["opus", "PCMU"])
async def test_audio_only_recording(whip_server: ServerFactory, codec: str) -> None:
    _, url, collector = await whip_server()
    await stream_file(SPEECH_CLIP, stream_url(url, participant_id=codec), TOKEN, audio_codec=codec)
    session = await collector.ended(f"call-1/{codec}")
    assert session.stats().audio_input_rate_hz == (48_000 if codec == "opus" else 8_000)
    assert collector.frames(f"call-1/{codec}") == []
    _check_audio(collector.audio(f"call-1/{codec}"), decode_audio_16k(SPEECH_CLIP))


async def test_stream_command_sends_a_file(whip_server: ServerFactory) -> None:
    _, url, collector = await whip_server()
    env = {**os.environ, "AFFECTSTREAM_INGEST__ICE_LOOPBACK": "only"}
    command = [sys.executable, "-m", "cli", "stream", str(SPEECH_CLIP), "--url", stream_url(url), "--token"]
    process = await asyncio.create_subprocess_exec(
        *command,
        TOKEN,
        "--no-realtime",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "streamed LJ001-0002.flac" in out.decode()
    await collector.ended("call-1/p1")
    _check_audio(collector.audio("call-1/p1"), decode_audio_16k(SPEECH_CLIP))

    process = await asyncio.create_subprocess_exec(
        *command, "wrong", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2 and "401" in err.decode()


async def test_lost_packets_become_silence_and_media_time_stays_true(whip_server: ServerFactory) -> None:
    _, url, collector = await whip_server()
    track = ToneTrack(60, skip=range(30, 40))  # 1.2 s of RTP time; 0.6-0.8 s never sent
    peer = RawPeer(track)
    ended = asyncio.Event()
    track.on("ended", ended.set)
    async with aiohttp.ClientSession() as http:
        await peer.connect(http, stream_url(url))
        await asyncio.wait_for(ended.wait(), 10)
        await asyncio.sleep(0.3)
        assert await peer.delete(http) == 200
    await peer.pc.close()
    session = await collector.ended("call-1/p1")
    stats = session.stats()
    assert stats.audio_gaps_filled == 1 and stats.audio_gap_s == pytest.approx(0.2, abs=0.001)
    audio = np.concatenate([c.samples for c in collector.audio("call-1/p1")])
    # everything up to the last 80 ms (held by the receiver's jitter buffer) arrives, gap included
    assert 1.1 <= len(audio) / SAMPLE_RATE_HZ <= 1.2

    def rms(start_s: float, end_s: float) -> float:
        return float(np.sqrt(np.mean(audio[int(start_s * 16_000) : int(end_s * 16_000)] ** 2)))

    assert rms(0.63, 0.77) < 0.01  # silence exactly where the packets were lost (Opus may ring 20 ms)
    assert rms(0.1, 0.55) > 0.1 and rms(0.85, 1.05) > 0.1


async def test_video_is_answered_inactive_when_not_wanted(whip_server: ServerFactory) -> None:
    """With no model looking at faces the server takes audio only: the peer is told not to send video, so no
    video packet is received, decrypted or decoded, and the session's media is the audio alone."""
    server, url, collector = await whip_server()
    server.receive_video = False
    recording = encode_recording(GRID_CLIP)
    file_result, packet_result = await asyncio.gather(
        asyncio.wait_for(stream_file(GRID_CLIP, stream_url(url, participant_id="file"), TOKEN), 20),
        asyncio.wait_for(stream_recording(recording, stream_url(url, participant_id="packets"), TOKEN), 20),
    )  # both clients finish: they wait only for the tracks the answer lets them send
    assert file_result.video_frames == packet_result.video_frames == 0
    for key in ("call-1/file", "call-1/packets"):
        session = await collector.ended(key)
        assert session.closed == "delete"
        assert collector.frames(key) == []
        stats = session.stats()
        assert stats.video_frames_received == 0 and stats.video_frames_sampled == 0
        _check_audio(collector.audio(key), decode_audio_16k(GRID_CLIP))

    server.receive_video = True  # the next offer gets video again
    await stream_recording(recording, stream_url(url, participant_id="again"), TOKEN)
    await collector.ended("call-1/again")
    assert len(collector.frames("call-1/again")) >= 24


async def test_only_sampled_frames_are_converted_to_rgb(
    whip_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The camera's 25 fps are decoded (VP8 needs every frame) but only the vision_fps frames the sampler keeps
    are converted to RGB."""
    converted: list[tuple[int, int]] = []
    to_rgb = sessions._to_rgb

    def counting(frame: av.VideoFrame) -> np.ndarray:
        converted.append((frame.width, frame.height))
        return to_rgb(frame)

    monkeypatch.setattr(sessions, "_to_rgb", counting)
    _, url, collector = await whip_server(vision_fps=5.0)
    await stream_recording(encode_recording(GRID_CLIP), stream_url(url), TOKEN)
    session = await collector.ended("call-1/p1")
    stats = session.stats()
    assert stats.video_frames_received >= 70
    assert len(converted) == stats.video_frames_sampled == len(collector.frames("call-1/p1")) <= 5 * 3 + 1


async def test_pre_encoded_audio_only_recording(whip_server: ServerFactory) -> None:
    _, url, collector = await whip_server()
    recording = encode_recording(SPEECH_CLIP)
    assert recording.video == () and recording.audio_s == pytest.approx(1.9, abs=0.05)
    result = await stream_recording(recording, stream_url(url), TOKEN)
    assert result.video_frames == 0
    await collector.ended("call-1/p1")
    _check_audio(collector.audio("call-1/p1"), decode_audio_16k(SPEECH_CLIP))
