"""What a WebRTC call's audio codec does to a voice: an Opus round trip as a call's sender encodes it (torch-free).

A call's sender (a browser, aiortc) encodes Opus in its VOIP mode, tuned for speech. The speech comes through
nearly unchanged, but the low-level content of the pauses does not: on the GRID recording, pause frames that
decoded from the file carried mains hum at about -42 dBFS (voiced by the descriptors' periodicity test) came
out of the call at about -60 dBFS and unvoiced, and the voiced fraction of its 5 s windows fell from ~0.67 to
~0.41. A model that reads the pauses then scores the same speech differently replayed and live; training on
both versions of a clip keeps its audio head on the voice (docs/selfmm.md §2.6, the call codec).
"""

from __future__ import annotations

import av
import numpy as np
import scipy.signal

from core.resample import SAMPLE_RATE_HZ

CALL_OPUS_RATE_HZ = 48_000
CALL_OPUS_BITRATE = 96_000  # aiortc's OpusEncoder (agent/stream_client.py sends with the same)
CALL_PACKET_S = 0.02  # one packet (Opus frame) of a WebRTC call
CALL_OPUS_FRAME = round(CALL_PACKET_S * CALL_OPUS_RATE_HZ)  # 960 samples
CALL_CODEC = f"opus-voip-{CALL_OPUS_BITRATE // 1000}k"  # names the round trip in caches and model cards
# 2: decoded as mono at the call's level. 1 (3.13.0 and before) decoded two channels and downmixed them 3 dB
# louder than the call delivers (tests/ingest/test_call_codec_matches_a_call.py holds it to a real call's level)
CALL_CODEC_REVISION = 2


def call_codec_round_trip(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono float32 [n] → the same length after Opus VOIP encode/decode at 48 kHz (the codec's delay
    removed), as the agent's resampler hands a live call's audio to the windows."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        return samples.copy()
    encoder = av.CodecContext.create("libopus", "w")
    encoder.bit_rate = CALL_OPUS_BITRATE
    encoder.sample_rate = CALL_OPUS_RATE_HZ
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.options = {"application": "voip"}
    decoder = av.CodecContext.create("libopus", "r")
    # mono out: left unset, libopus decodes two equal channels, and the mono downmix then adds 3 dB
    decoder.layout = "mono"
    decoder.sample_rate = CALL_OPUS_RATE_HZ
    up = av.AudioResampler(format="s16", layout="mono", rate=CALL_OPUS_RATE_HZ, frame_size=CALL_OPUS_FRAME)
    down = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
    frame = av.AudioFrame.from_ndarray(np.clip(samples, -1.0, 1.0)[None, :], format="flt", layout="mono")
    frame.sample_rate = SAMPLE_RATE_HZ
    # a tail of silence flushes the codec's lookahead; the decoded signal is cut back to the input's length
    tail = av.AudioFrame.from_ndarray(np.zeros((1, SAMPLE_RATE_HZ // 10), np.float32), format="flt", layout="mono")
    tail.sample_rate = SAMPLE_RATE_HZ
    decoded: list[np.ndarray] = []

    def drain(packets: list[av.Packet]) -> None:
        for packet in packets:
            for out in decoder.decode(packet):
                decoded.extend(part.to_ndarray().reshape(-1) for part in down.resample(out))

    for part in (frame, tail, None):
        for chunk in up.resample(part):
            drain(encoder.encode(chunk))
    drain(encoder.encode(None))
    decoded.extend(part.to_ndarray().reshape(-1) for part in down.resample(None))
    result = np.concatenate(decoded).astype(np.float32, copy=False)
    delay = _delay(samples, result)
    out = result[delay: delay + samples.size]
    return np.pad(out, (0, samples.size - out.size))


def _delay(reference: np.ndarray, decoded: np.ndarray, max_delay: int = SAMPLE_RATE_HZ // 20) -> int:
    """The codec's delay in samples (≤ 50 ms): the lag that best aligns the decoded signal with the input."""
    n = min(reference.size, decoded.size - max_delay, SAMPLE_RATE_HZ * 2)
    if n <= 0:
        return 0
    scores = scipy.signal.correlate(decoded[: n + max_delay], reference[:n], mode="valid", method="fft")
    return int(np.argmax(scores))
