"""Command-line options generated from a stage's config dataclass (the one adapter behind ``vsfa``).

Each command is a :class:`Command`: a config dataclass, a ``run(cfg)`` function and an optional printer; the
dataclass is the single source of truth, turned into click options by the rules in :data:`CONVENTIONS`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import logging
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from vsfa.config import from_dict, merge, parse_assignments, read_toml, set_dotted
from vsfa.errors import ConfigError

RESERVED = ("config", "set", "help", "quiet")
CONVENTIONS = """\
Every option of a command is a field of its stage's config dataclass, and the field's docstring is its help.

- Settings come from, lowest first: the defaults, `--config FILE.toml`, `--set KEY=VALUE` (repeatable; the
  value is TOML: `--set train.lr=1e-4`, `--set "seeds=[0, 1]"`; anything that is not TOML is a plain string),
  then the flags. Unknown keys are errors naming the key.
- A field `batch_size` is `--batch-size`; a field of a nested section is dotted like its TOML key
  (`--train.max-steps` is `[train] max_steps`).
- Yes/no fields: `--x/--no-x`. Lists: repeat the option, or give several items separated by commas
  (`--sets neutral,requests` is `--sets neutral --sets requests`); `--layers all` means every layer.
  Tables (`--bench-opt`, `--generation`, `--world-set`): repeatable `KEY=VALUE`, dotted keys nest.
- A field without a default is required (as a flag, in `--config` or by `--set`).
- `-q/--quiet` (on any command, or `vsfa -q ...`): warnings only, no progress output.
- Errors: one line `error: ...` on stderr and exit code 2; a failed check (`models check`, `report --check`)
  exits 1.
"""


@dataclass(frozen=True)
class Preset:
    """A named starting point below ``--config`` (``vsfa demo --study NAME``).

    ``resolve(name, user)`` gets the preset name and the user's layered settings (a nested dict) and returns
    the configs to run, in order (a name such as ``all`` may stand for several).
    """

    flag: str
    default: str
    help: str
    resolve: Callable[[str, dict[str, Any]], list[Any]]


@dataclass(frozen=True)
class Command:
    """One ``vsfa`` command: ``name`` may hold a group (``"data images"``)."""

    name: str
    config: type
    run: Callable[[Any], Any]
    show: Callable[[Any], str | None] | None = None  # text printed after the run (stdout)
    exit_code: Callable[[Any], int] | None = None  # non-zero: a failed check (exit 1), not an error
    args: tuple[str, ...] = ()  # fields taken as positional arguments, in order
    help: str | None = None  # default: the run function's docstring
    preset: Preset | None = None


@dataclass(frozen=True)
class Field:
    """One leaf field of a (nested) config dataclass."""

    key: str  # dotted, as in TOML: "train.max_steps"
    tp: Any  # the field type, Optional unwrapped
    optional: bool
    required: bool
    default: Any
    help: str
    flag: str  # without the leading dashes
    none_word: str | None = None  # an optional list: this word means None (``--layers all``)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of ``cls`` and its bases: the string literal right below each field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unwrap(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def fields_of(cls: type, prefix: str = "") -> list[Field]:
    """The leaf fields of ``cls``, nested sections flattened with dotted keys."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Field] = []
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap(hints[f.name])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += fields_of(tp, f"{prefix}{f.name}.")
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        flag = prefix.replace("_", "-") + f.metadata.get("flag", f.name.replace("_", "-"))
        help_ = docs.get(f.name, "")
        none_word = f.metadata.get("none")
        out.append(Field(prefix + f.name, tp, optional, not has_default, default, help_, flag, none_word))
    return out


_SCALARS = {int: "integers", float: "numbers"}


def _convert_items(fld: Field, values: Sequence[str]) -> list[Any]:
    """A repeatable list option's values, each split on commas, as items of the list's type."""
    inner = (typing.get_args(fld.tp) or (str,))[0]
    raw = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if inner not in _SCALARS:
        return raw
    try:
        return [inner(v) for v in raw]
    except ValueError:
        text = ",".join(values)
        if fld.none_word is not None:
            raise ConfigError(
                f"--{fld.flag} must be {fld.none_word!r} or comma-separated {_SCALARS[inner]}, not {text!r}"
            ) from None
        raise ConfigError(f"--{fld.flag}: expected comma-separated {_SCALARS[inner]}, not {text!r}") from None


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple)


def _is_dict(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict


def flag_value(fld: Field, value: Any) -> Any:
    """A click value as the config value of ``fld`` (lists split, ``KEY=VALUE`` parsed)."""
    if _is_dict(fld.tp):
        out: dict[str, Any] = {}
        for k, v in parse_assignments(value, f"--{fld.flag}").items():
            set_dotted(out, k, v, f"--{fld.flag}")
        return out
    if _is_list(fld.tp):
        if fld.none_word is not None and list(value) == [fld.none_word]:
            return None
        return _convert_items(fld, value)
    return value


def _click_type(tp: Any) -> Any:
    return {int: click.INT, float: click.FLOAT}.get(tp, click.STRING)


def _param(fld: Field, positional: bool) -> click.Parameter:
    name = fld.key.replace(".", "__")
    shown = _shown_default(fld)
    text = fld.help + (" [required]" if fld.required else f" [default: {shown}]" if shown else "")
    if positional:
        nargs = -1 if _is_list(fld.tp) else 1
        return click.Argument([name], required=False, nargs=nargs, metavar=fld.key)
    if fld.tp is bool:
        return click.Option(
            [f"--{fld.flag}/--no-{fld.flag}", name], default=None, help=text, show_default=False
        )
    multiple = _is_list(fld.tp) or _is_dict(fld.tp)
    metavar = "KEY=VALUE" if _is_dict(fld.tp) else None
    if _is_list(fld.tp):
        inner = (typing.get_args(fld.tp) or (str,))[0]
        metavar = f"{_click_type(inner).name.upper()},..."
    tp = click.STRING if multiple else _click_type(fld.tp)
    return click.Option([f"--{fld.flag}", name], type=tp, multiple=multiple, help=text, metavar=metavar)


def _shown_default(fld: Field) -> str:
    d = fld.default
    if fld.required or d is None or d == "" or d == [] or d == {}:
        return ""
    if isinstance(d, bool):
        return "true" if d else "false"
    if isinstance(d, list | tuple):
        return ",".join(map(str, d))
    return str(d)


def layers(
    ctx: click.Context, flds: list[Field], params: dict[str, Any], config: str | None, sets: Sequence[str]
) -> dict[str, Any]:
    """The user's settings, nested: ``--config`` file < ``--set`` items < flags given on the command line."""
    data: dict[str, Any] = read_toml(config) if config else {}
    for key, value in parse_assignments(sets).items():
        set_dotted(data, key, value, "--set")
    for fld in flds:
        name = fld.key.replace(".", "__")
        source = ctx.get_parameter_source(name)
        value = params.get(name)
        if source is not ParameterSource.COMMANDLINE or value in (None, ()):
            continue
        set_dotted(data, fld.key, flag_value(fld, value))
    return data


def _missing(ctx: click.Context, flds: list[Field], data: dict[str, Any]) -> None:
    for fld in flds:
        if not fld.required:
            continue
        node: Any = data
        for part in fld.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            param = next(p for p in ctx.command.params if p.name == fld.key.replace(".", "__"))
            raise click.MissingParameter(ctx=ctx, param=param)


def resolve(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build ``cls`` from layered settings; a ``check(where)`` method of the config runs last."""
    cfg = from_dict(cls, data, where=where)
    check = getattr(cfg, "check", None)
    if callable(check):
        check(where) if "where" in inspect.signature(check).parameters else check()
    return cfg


def build(cmd: Command, name: str) -> click.Command:
    """The click command of ``cmd`` (``name`` is its last word)."""
    flds = fields_of(cmd.config)
    clash = {f.flag for f in flds} & set(RESERVED)
    if clash:
        raise TypeError(f"{cmd.config.__name__}: field flag(s) {sorted(clash)} clash with --config/--set")
    params = [_param(f, f.key in cmd.args) for f in sorted(flds, key=lambda f: f.key not in cmd.args)]
    params += [
        click.Option(["--config", "config_file"], help="TOML file with settings (below --set and flags)."),
        click.Option(
            ["--set", "set_items"],
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a setting, e.g. --set a.b=1 (TOML value; repeatable).",
        ),
    ]
    params.append(quiet_option())
    if cmd.preset is not None:
        params.append(
            click.Option(
                [f"--{cmd.preset.flag}", "preset_name"], default=cmd.preset.default, help=cmd.preset.help
            )
        )

    def callback(config_file: str | None, set_items: tuple[str, ...], preset_name: str | None = None, **kw):
        ctx = click.get_current_context()
        if isinstance(ctx.command, click.Group) and ctx.invoked_subcommand is not None:
            return
        user = layers(ctx, flds, kw, config_file, set_items)
        where = config_file or "command line"
        if cmd.preset is not None:
            configs = cmd.preset.resolve(preset_name or cmd.preset.default, user)
        else:
            _missing(ctx, flds, user)
            configs = [resolve(cmd.config, user, where)]
        for cfg in configs:
            result = cmd.run(cfg)
            text = cmd.show(result) if cmd.show is not None else None
            if text:
                click.echo(text)
            if cmd.exit_code is not None and cmd.exit_code(result):
                ctx.exit(cmd.exit_code(result))

    doc = (cmd.help or inspect.getdoc(cmd.run) or "").split("\n\n")[0]
    args = [f for f in flds if f.key in cmd.args]
    if args:  # click lists options only: the arguments' docs go into the command's help
        doc += "\n\n\b\nArguments:\n" + "\n".join(f"  {f.key}  {f.help}" for f in args)
    return click.Command(name, params=params, callback=callback, help=doc, no_args_is_help=False)


PACKAGES = (
    "vsfa",
    "probes",
    "analysis",
    "figures",
)  # their loggers print INFO; other libraries' print WARNING


class _Stderr(logging.StreamHandler):
    """A handler that writes bare messages to the current ``sys.stderr`` (tests and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(quiet: bool = False) -> None:
    """Log our packages' records as bare messages on stderr, at INFO (WARNING when ``quiet``).

    A handler on each package logger, added once; records still propagate, so a root handler the host set up
    (pytest's caplog, an application's) sees them too. Other libraries keep Python's default (warnings only).
    """
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            logger.addHandler(_Stderr())


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        setup_logging(quiet=True)


def quiet_option() -> click.Option:
    """``-q/--quiet``: warnings only (no progress output, no info lines)."""
    return click.Option(
        ["-q", "--quiet"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_quiet,
        help="Warnings only.",
    )


def build_group(
    name: str,
    help_: str,
    commands: dict[str, click.Command],
    main: Command | None = None,
    help_if_bare: bool = True,
) -> click.Group:
    """A command group; ``main`` (optional) also runs the group itself (``vsfa eval --bench ...``).

    ``help_if_bare``: the bare group name prints the help (else: a "Missing command" usage error).
    """
    if main is None:
        group = click.Group(name, help=help_, no_args_is_help=help_if_bare)
    else:
        base = build(main, name)
        group = click.Group(
            name,
            params=base.params,
            callback=base.callback,
            help=help_,
            invoke_without_command=True,
            no_args_is_help=help_if_bare,
        )
    for sub in commands.values():
        group.add_command(sub)
    return group


__all__ = [
    "Command",
    "Preset",
    "build",
    "build_group",
    "field_docs",
    "fields_of",
    "layers",
    "merge",
    "resolve",
]
