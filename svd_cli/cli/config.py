"""`svd config show`: the settings `svd animate` would use, and where each comes from."""

from __future__ import annotations

import json

import typer

from .common import Debug, JsonOut, spell

config_app = typer.Typer(help="Show the settings svd animate would use, and where each comes from.")


@config_app.command("show")
def config_show(json_out: JsonOut = False, debug: Debug = False) -> None:
    """The effective `svd animate` settings and where each comes from (flag > env > config file > default)."""
    from ..config import effective_settings

    rows = [{"option": spell(r.pop("name")), **r} for r in effective_settings()]
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    from rich.table import Table

    from .terminal import out_console

    table = Table(box=None, pad_edge=False)
    for col in ("option", "value", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["option"], "" if r["value"] is None else str(r["value"]), r["source"])
    out_console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
