"""The server's pipeline stages, told apart in profiler samples (bench/profile_server.py).

Python threads are classified from py-spy's raw stacks: the first rule (in `PYTHON_RULES` order) that matches
any frame of a stack names its stage, so a VAD call made by the windower counts as VAD and ONNX Runtime called
by the VAD is not scoring. Threads without Python (ONNX Runtime, CTranslate2, MediaPipe, BLAS pools) are named
by their OS name (MediaPipe's) or by the library most of their `perf` samples ran in.

py-spy's `--nonblocking` mode counts a thread as busy from its OS state, which is often "running" for a
thread that has just been woken to wait for a lock or the GIL: samples whose innermost frame is a blocking
wait (`IDLE_LEAVES`) are kept apart and used only for a thread that has no other samples.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

STAGES: dict[str, str] = {
    "opus_decode": "Opus decoding (aiortc decoder threads)",
    "vp8_decode": "VP8 decoding (aiortc decoder threads)",
    "h264_decode": "H.264 decoding (aiortc decoder threads)",
    "rgb": "RGB conversion (sessions._to_rgb)",
    "audio_convert": "audio resampling to 16 kHz (ingest)",
    "vad": "VAD (Silero, in the windower)",
    "whisper": "Whisper (faster-whisper, CTranslate2)",
    "facemesh": "FaceMesh (MediaPipe)",
    "audio_features": "audio features (librosa)",
    "text": "tokenizer",
    "scoring": "scoring (ONNX Runtime)",
    "publishing": "publishing (Kafka producer, spool)",
    "windowing": "windowing (agent.windows)",
    "ingest": "ingest tracks and merger (sessions, mediatime)",
    "srtp": "SRTP (pylibsrtp)",
    "rtp": "RTP/RTCP, jitter buffer (aiortc)",
    "ice": "ICE and UDP (aioice)",
    "http": "HTTP (aiohttp)",
    "metrics": "metrics (prometheus_client)",
    "pipeline": "pipeline glue (pipeline, server, whip)",
    "bench": "bench hooks (latency sink, media clock)",
    "event_loop": "asyncio event loop (scheduling, selectors)",
    "blas": "numpy BLAS threads (any caller)",
    "other": "other Python",
    "native_other": "other native threads (OpenBLAS workers spinning)",
    "profiler": "profiler's own /proc reader",
    "unaccounted": "threads that ended between /proc reads",
}

# (stage, substrings of a py-spy frame "function (file:line)"); first match in this order wins
PYTHON_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("profiler", ("bench/_threadcpu.py",)),
    ("rgb", ("_to_rgb (agent/sessions.py",)),
    ("opus_decode", ("aiortc/codecs/opus.py",)),
    ("vp8_decode", ("aiortc/codecs/vpx.py",)),
    ("h264_decode", ("aiortc/codecs/h264.py",)),
    ("vad", ("agent/vad.py",)),
    ("audio_convert", ("core/audiotime.py", "core/resample.py")),
    ("whisper", ("faster_whisper/", "ctranslate2/", "agent/speech")),
    ("facemesh", ("core/features_vision.py", "mediapipe/")),
    ("audio_features", ("core/features_audio.py", "librosa/")),
    ("text", ("core/features_text.py", "tokenizers/")),
    ("scoring", ("agent/scoring.py", "agent/bundle.py", "onnxruntime/")),
    ("publishing", ("agent/publish.py", "agent/producer.py", "agent/spool.py", "agent/messages.py", "kafka/")),
    ("windowing", ("agent/windows.py",)),
    ("ingest", ("agent/sessions.py", "core/mediatime.py")),
    ("srtp", ("pylibsrtp/",)),
    ("rtp", ("aiortc/",)),
    ("ice", ("aioice/",)),
    ("http", ("aiohttp/",)),
    ("metrics", ("prometheus_client/", "agent/metrics.py")),
    ("pipeline", ("agent/pipeline.py", "agent/server.py", "agent/whip.py", "agent/feed.py")),
    ("bench", ("_clocked (bench/live.py", "sink (bench/live.py", "_peak_rss (bench/live.py", "rss_mb (bench/live.py")),
    ("event_loop", ("asyncio/", "selectors.py")),
)

IDLE_LEAVES = (
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "_wait_for_tstate_lock (threading.py",
    "_worker (concurrent/futures/thread.py",  # waiting on its work queue (a C call: no frame of its own)
    "select (selectors.py",
)

# (stage, prefixes of an OS thread name) for threads without Python
NATIVE_COMMS: tuple[tuple[str, tuple[str, ...]], ...] = (("facemesh", ("mediapipe",)),)

# (stage, substrings of a shared library's path) for threads without Python
NATIVE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("whisper", ("ctranslate2",)),
    ("scoring", ("onnxruntime",)),
    ("facemesh", ("mediapipe", "_framework_bindings")),
    ("blas", ("openblas", "libblas", "mkl")),  # idle OpenBLAS workers spin in libc (sched_yield): native_other
    ("vp8_decode", ("libvpx",)),
    ("opus_decode", ("libopus",)),
    ("srtp", ("libsrtp",)),
)

_THREAD = re.compile(r"^thread \((\d+)\)")
_PERF_LINE = re.compile(r"^\s*(\d+)\s+.*\((\S+)\)\s*$")


def python_stage(frames: list[str]) -> str:
    for stage, needles in PYTHON_RULES:
        if any(needle in frame for frame in frames for needle in needles):
            return stage
    return "other"


def parse_pyspy_raw(text: str) -> tuple[dict[int, Counter[str]], dict[int, Counter[str]]]:
    """py-spy `record --threads --format raw` output -> (busy, waiting) samples per stage for each thread id.
    Stacks without Python frames (native threads that once touched Python) are left out."""
    busy: dict[int, Counter[str]] = defaultdict(Counter)
    waiting: dict[int, Counter[str]] = defaultdict(Counter)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        match = _THREAD.match(thread)
        if match is None or not frames:
            continue
        idle = any(leaf in frames[-1] for leaf in IDLE_LEAVES)
        (waiting if idle else busy)[int(match.group(1))][python_stage(frames)] += int(count)
    return dict(busy), dict(waiting)


def native_stage(comm: str, dsos: Counter[str]) -> str:
    """The stage of a thread without Python: by its OS name, else the known library with most samples."""
    for stage, prefixes in NATIVE_COMMS:
        if comm.startswith(prefixes):
            return stage
    votes: Counter[str] = Counter()
    for dso, count in dsos.items():
        for stage, needles in NATIVE_RULES:
            if any(needle in dso.lower() for needle in needles):
                votes[stage] += count
                break
    return votes.most_common(1)[0][0] if votes else "native_other"


def parse_perf_script(text: str) -> dict[int, Counter[str]]:
    """`perf script -F tid,ip,dso` output (no call graphs) -> samples per shared library for each thread id."""
    out: dict[int, Counter[str]] = defaultdict(Counter)
    for line in text.splitlines():
        match = _PERF_LINE.match(line)
        if match is not None:
            out[int(match.group(1))][match.group(2)] += 1
    return dict(out)
