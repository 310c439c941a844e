"""`affectstream token mint`: a scoped, expiring token for one call (agent/tokens.py).

The key is `ingest.token_secret`, read from the environment (AFFECTSTREAM_INGEST__TOKEN_SECRET) or the config
file, never from the command line (argv is visible to every user of the machine and kept in shell history).
The token alone goes to stdout, for `$(affectstream token mint ...)`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agent.tokens import MAX_TTL_S, Scope, TokenError, mint_for
from cli.options import build_settings
from core.errors import ConfigError

token_app = typer.Typer(help="Scoped access tokens: one call's viewer, one participant's publisher.")


@token_app.command("mint")
def mint(
    scope: Annotated[Scope, typer.Option(help="viewer: reads the call's scores; publisher: sends one participant")],
    call: Annotated[str, typer.Option(help="the call id")],
    participant: Annotated[
        str | None, typer.Option(help="publisher: the participant it sends as (required); viewer: only its scores")
    ] = None,
    role: Annotated[str | None, typer.Option(help="publisher: the role it must publish under")] = None,
    ttl: Annotated[int, typer.Option(min=1, max=MAX_TTL_S, help="seconds until it expires")] = 3600,
) -> None:
    """Print a token signed with ingest.token_secret that grants `scope` on one call until it expires."""
    settings = build_settings()
    secret = settings.ingest.token_secret
    if secret is None:
        raise ConfigError("ingest.token_secret is not set: set AFFECTSTREAM_INGEST__TOKEN_SECRET (or the config file)")
    if scope == "publisher" and participant is None:
        raise ConfigError("a publisher token needs --participant")
    if role is not None and scope != "publisher":
        raise ConfigError("--role is for publisher tokens only")
    try:
        token = mint_for(secret.get_secret_value(), scope, call, participant, ttl_s=ttl, role=role)
    except TokenError as exc:
        raise ConfigError(str(exc).replace("token claims: ", "")) from None
    typer.echo(token)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
