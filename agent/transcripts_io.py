"""The JSON-line form of a transcript that `affectstream transcribe` writes (one object per window)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from core.types import StreamId, Transcript, recording_session_id

_NOT_ID = re.compile(r"[^A-Za-z0-9._:-]+")


def transcript_record(transcript: Transcript) -> dict[str, Any]:
    """Window identity and timing, text and media-timed words of one transcript."""
    window = transcript.window
    return {
        "stream": {
            "call_id": window.stream.call_id,
            "participant_id": window.stream.participant_id,
            "role": window.stream.role,
            "key": window.stream.key,
        },
        "session": window.stream.session_id,
        "seq": window.seq,
        "start_s": round(window.start_s, 4),
        "end_s": round(window.end_s, 4),
        "closed_by": window.closed_by,
        "text": transcript.text,
        "words": [
            {
                "text": word.text,
                "start_s": round(word.start_s, 3),
                "end_s": round(word.end_s, 3),
                "probability": round(word.probability, 4),
            }
            for word in transcript.words
        ],
        "language": transcript.language,
        "no_speech_prob": round(transcript.no_speech_prob, 4),
    }


def transcript_line(transcript: Transcript) -> str:
    """One JSON line (no trailing newline)."""
    return json.dumps(transcript_record(transcript), ensure_ascii=False, separators=(",", ":"))


def stream_for_file(path: str | Path) -> StreamId:
    """The stream of a recorded file: call_id from the file stem (made a valid id), one 'speaker', and the
    recording's deterministic session (a rerun of the same file is the same identity)."""
    call_id = _NOT_ID.sub("_", Path(path).stem).lstrip("._:-")[:128] or "file"
    return StreamId(call_id=call_id, participant_id="speaker", role="participant",
                    session_id=recording_session_id())  # fmt: skip
