"""What every command shares: option declarations used in several places, and how library words become CLI words."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from ..errors import spell_refs
from ..options import BY_NAME, Option

# Declared once, used by every command (so `svd weights list --debug` works like `svd animate --debug`).
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def spell(name: str) -> str:
    """A setting as the command line spells it: 'motion_bucket' -> '--motion-bucket'."""
    return BY_NAME[name].flag if name in BY_NAME else "--" + name.replace("_", "-")


# Control characters (a newline in a file's name, a terminal escape) shown as Python writes them in a string, so a
# line of output stays one line that says what the name holds: a name cannot forge or break a log line.
CONTROL_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(32), 127)}


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a newline as \\n)."""
    return text.translate(CONTROL_ESCAPES)


def words(text: str) -> str:
    """A library message (or progress note) with its settings spelled as flags."""
    return spell_refs(text, spell)


def click_message(exc) -> str:
    """One sentence for a parsing error, naming the option (and its environment variable if that was the source)."""
    param = getattr(exc, "param", None)
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, typer.BadParameter) and param is not None:
        name = param.opts[0] if getattr(param, "opts", None) else param.name
        reason = str(exc.message).strip().rstrip(".")
        for pydantic, plain in (
            ("Input should be a valid integer", "expected a whole number"),
            ("Input should be a valid number", "expected a number"),
            ("Input should be a valid boolean", "expected true or false"),
        ):
            if reason.startswith(pydantic):
                reason = plain
        source = ""
        if ctx is not None and ctx.get_parameter_source(param.name).name == "ENVIRONMENT":
            source = f" (from the environment variable {param.envvar})"
        return f"invalid value for {name}{source}: {reason}. See `svd {ctx.info_name if ctx else ''} --help`."
    message = " ".join(exc.format_message().split())
    return f"{message}{'' if message.endswith(('.', '?')) else '.'} See `svd --help`."


CLI_TYPES = {int: int, float: float, str: str, bool: bool, Path: str, tuple: str, list: str}


def schema_parameter(opt: Option) -> inspect.Parameter:
    """The typer declaration of one schema option (the same flag, variable, help and default everywhere)."""
    names = [f"{opt.flag}/--no-{opt.flag[2:]}" if opt.negatable else opt.flag]
    if opt.short:
        names.append("-" + opt.short)
    cli_type = CLI_TYPES[opt.type]
    simple = opt.type in (int, float, str, bool) and not opt.negatable
    default = opt.default if simple else None
    annotation = cli_type if (opt.type is bool and not opt.negatable) else (cli_type | None)
    if opt.multiple:  # repeatable: --lora a.safetensors --lora b.safetensors:0.5
        annotation = list[cli_type] | None
    declaration = typer.Option(
        *names, help=opt.help, envvar=opt.env_var, show_envvar=True, show_default=default is not None
    )
    return inspect.Parameter(
        opt.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, declaration]
    )
