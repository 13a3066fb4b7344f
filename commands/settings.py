"""Typed settings: each flag and its environment twin declared once, on a pydantic model.

A subcommand's settings are a `BaseModel` whose fields carry an `Opt` (flag, variable,
help). `add_arguments` builds the argparse flags from the model without reading anything;
`load` reads the chosen subcommand's variables only (so a bad value of another
subcommand's variable never matters), lets pydantic convert and check every value, and
turns the first problem into one line naming the flag, the variable, the value and the fix:

    --metrics-port (ESPRESSO_METRICS_PORT='http'): not an integer; give a port 0-65535, or -1 for none

Values from the command line win over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from state.builtin_names import is_builtin_name
from state.errors import ConfigError
from state.timeutil import parse_duration, parse_ts

__all__ = ["Opt", "Duration", "Instant", "InputFile", "TextFile", "OutputFile", "Directory", "Port", "Count",
           "add_arguments", "load", "ConfigError"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Opt:
    """The command-line face of a setting. `flag` None: positional (named after the field)."""

    flag: str | None
    env: str | None = None
    help: str = ""
    fix: str = ""  # how to correct a bad value, appended to the message
    switch: bool = False  # a flag without a value (store_true)
    hidden: bool = False
    metavar: str | None = None
    short: str | None = None  # e.g. "-w"
    group: str | None = None  # title of the --help section


# -- value types ---------------------------------------------------------------------------
def _duration(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    ms = parse_duration(value)
    if ms is None:
        raise ValueError("not a duration")
    return ms


def _instant(value: Any) -> int:
    ms = parse_ts(value)
    if ms is None:
        raise ValueError("not an ISO-8601 instant with an offset or Z")
    return ms


def _stat(p: Path) -> os.stat_result | None:
    """`os.stat`, None when nothing is there; other errors (a directory without search
    permission, a loop of links) become one line instead of an exception."""
    try:
        return p.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ValueError(f"cannot access it: {exc.strerror}") from None


def _input_file(value: Path) -> Path:
    p = value.expanduser().absolute()  # helper processes may run elsewhere: never a relative path
    st = _stat(p)
    if st is None:
        raise ValueError("no such file")
    if stat.S_ISDIR(st.st_mode):
        raise ValueError("is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise ValueError("not readable (permissions)")
    return p


def _text_file(value: Path) -> Path:
    """An input file that must be UTF-8 text (a YAML definition file)."""
    p = _input_file(value)
    try:
        p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    return p


def _campaigns(value: str) -> str:
    """`builtin` (or `builtin:NAME`), or a campaigns YAML (checked as any definition file)."""
    return value if is_builtin_name(value) else str(_text_file(Path(value)))


def _output_file(value: Path) -> Path:
    p = value.expanduser().absolute()
    st = _stat(p)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ValueError("is a directory, not a file")
    parent = p.parent
    parent_st = _stat(parent)
    if parent_st is None or not stat.S_ISDIR(parent_st.st_mode):
        raise ValueError(f"its directory {parent} does not exist")
    if (st is None and not os.access(parent, os.W_OK | os.X_OK)) or (st is not None and not os.access(p, os.W_OK)):
        raise ValueError("not writable (permissions)")
    return p


def _directory(value: Path) -> Path:
    p = value.expanduser().absolute()
    if p.exists() and not p.is_dir():
        raise ValueError("exists and is not a directory")
    return p


def _port(value: int) -> int:
    if not -1 <= value <= 65535:
        raise ValueError("not a port")
    return value


def _count(value: int) -> int:
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


Duration = Annotated[int, BeforeValidator(_duration)]  # milliseconds
Instant = Annotated[int, BeforeValidator(_instant)]  # epoch milliseconds
InputFile = Annotated[Path, AfterValidator(_input_file)]
TextFile = Annotated[Path, AfterValidator(_text_file)]  # UTF-8, e.g. YAML
OutputFile = Annotated[Path, AfterValidator(_output_file)]
Directory = Annotated[Path, AfterValidator(_directory)]
Port = Annotated[int, AfterValidator(_port)]  # -1: none
Count = Annotated[int, AfterValidator(_count)]

_TYPE_FIX = {
    "int_parsing": "give a whole number",
    "bool_parsing": "give 1/0, true/false, yes/no or on/off",
    "float_parsing": "give a number",
}
#: pydantic's wording of a type error -> ours (the value is quoted after it)
_TYPE_PROBLEM = {
    "int_parsing": "not a whole number",
    "int_from_float": "not a whole number",
    "bool_parsing": "not a yes/no value",
    "float_parsing": "not a number",
}


# -- argparse ----------------------------------------------------------------------------
def _opt(model: type[BaseModel], name: str) -> Opt:
    for meta in model.model_fields[name].metadata:
        if isinstance(meta, Opt):
            return meta
    raise TypeError(f"{model.__name__}.{name} has no Opt")


def _default_text(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    d = field.default
    return "none" if d is None else ("off" if d is False else str(d))


def add_arguments(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Flags of `model`; defaults stay None so `load` can tell "not given" from a value."""
    made: dict[str, Any] = {}
    for name in model.model_fields:
        opt = _opt(model, name)
        target: Any = parser
        if opt.group:
            target = made.get(opt.group) or made.setdefault(opt.group, parser.add_argument_group(opt.group))
        if opt.hidden:
            help_text = argparse.SUPPRESS
        else:
            env = f" [env {opt.env}]" if opt.env else ""
            help_text = f"{opt.help}{env} (default {_default_text(model, name)})".replace("%", "%%")
        if opt.flag is None:
            target.add_argument(name, help=help_text, metavar=opt.metavar or name.upper())
            continue
        names = [opt.short, opt.flag] if opt.short else [opt.flag]
        if opt.switch:
            target.add_argument(*names, dest=name, action="store_const", const=True, default=None, help=help_text)
        else:
            target.add_argument(*names, dest=name, default=None, help=help_text, metavar=opt.metavar)


def load(model: type[M], args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> M:
    """The settings of one subcommand from its flags, then its variables, then defaults."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    given: dict[str, str] = {}  # field -> how the user gave it, for messages
    for name in model.model_fields:
        opt = _opt(model, name)
        value = getattr(args, name, None)
        if value is not None:
            raw[name] = value
            given[name] = f"{opt.flag or name} {value!r}" if not opt.switch else str(opt.flag)
        elif opt.env and env.get(opt.env, "").strip() != "":
            raw[name] = env[opt.env].strip()
            given[name] = f"{opt.env}={raw[name]!r}"
    try:
        return model(**raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(model, exc, given)) from None


def _one_line(model: type[BaseModel], exc: ValidationError, given: Mapping[str, str]) -> str:
    err = exc.errors(include_url=False)[0]
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else ""
    if name not in model.model_fields:  # a check across fields (model validator)
        return str(err.get("msg", exc)).removeprefix("Value error, ")
    opt = _opt(model, name)
    label = opt.flag or name
    if opt.env:
        label += f" / {opt.env}"
    where = given.get(name)
    problem = _TYPE_PROBLEM.get(str(err.get("type"))) or str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        problem = "required"
    text = f"{label}: {problem}" + (f" (got {where})" if where else "")
    fix = opt.fix or _TYPE_FIX.get(str(err.get("type")), "")
    return f"{text}; {fix}" if fix else text
