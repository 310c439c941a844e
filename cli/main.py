"""The `affectstream` command: one entry point, a subcommand per job (see `affectstream --help`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import typer

from cli.commands import (
    broker,
    dataset,
    demo,
    evaluate,
    export,
    model,
    monitor,
    replay,
    serve,
    stream,
    token,
    train,
    transcribe,
)
from cli.options import global_options
from core.errors import AffectstreamError

log = logging.getLogger(__name__)

app = typer.Typer(
    name="affectstream",
    help="Streaming multimodal affect scoring of live calls (Self-MM, ONNX Runtime, Kafka).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.callback()(global_options)

# Each module defines `register(app)`; one module per job keeps this file free of job logic.
COMMAND_MODULES = (broker, transcribe, serve, stream, token, replay, evaluate, monitor, demo, train, export, dataset,
                   model)  # fmt: skip
for command_module in COMMAND_MODULES:
    command_module.register(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command (`argv`, default: the process's arguments). Every input error is an AffectstreamError
    raised at the input boundary: it is logged as one line, without a traceback, and the exit code is 2."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="affectstream")
    except AffectstreamError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
