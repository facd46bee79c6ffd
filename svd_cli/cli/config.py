"""`svd config show`: the settings `svd animate` would use, and where each comes from."""

from __future__ import annotations

import json
import sys

import typer

from ..config import effective_settings, load_config
from ..errors import spell_refs
from .common import Debug, JsonOut, one_line, spell
from .terminal import out_console

config_app = typer.Typer(help="Show the settings svd animate would use, and where each comes from.")


@config_app.command("show")
def config_show(json_out: JsonOut = False, debug: Debug = False) -> None:
    """The effective `svd animate` settings and where each comes from (flag > env > config file > default)."""

    rows = [{"option": spell(r.pop("name")), **r} for r in effective_settings()]
    for warning in load_config().warnings():
        print(f"svd: warning: {one_line(warning)}.", file=sys.stderr)
    for r in rows:
        if "problem" in r:
            r["problem"] = spell_refs(r["problem"], spell)
            env = r["source"].removeprefix("env ")
            print(f"svd: warning: {env}={r['value']}: {r['problem']} svd animate refuses it; fix or unset {env}.",
                  file=sys.stderr)  # fmt: skip
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("option", "value", "source"):
        table.add_column(col)
    for r in rows:
        source = r["source"] + (" (invalid)" if "problem" in r else "")
        table.add_row(r["option"], "" if r["value"] is None else str(r["value"]), source)
    out_console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
