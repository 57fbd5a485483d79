"""Command-line options derived from the pydantic models that define them (BenchConfig, MethodSpec).

A setting is declared once, in its model, with its type, bounds, default and help; `model_options` turns chosen
fields into typer options on a command. Every generated option defaults to None, so the command receives only
what the user typed (a dict), and the model applies its own defaults when the layers are merged: the CLI can
never hold a second copy of a default. The help text says the model's current default.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from quantlab.errors import OptionError, QuantlabError, describe_validation_error


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _inner(annotation: Any) -> Any:
    """`X | None` → X, and `Annotated[X, constraints]` (e.g. PositiveInt) → X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(_inner(annotation)) is list


def _item_type(info: FieldInfo) -> type:
    """The element type of a list field, with constraints (`PositiveInt`) stripped: int or str."""
    item = _inner(typing.get_args(_inner(info.annotation))[0])
    return int if item is int else str


def _cli_type(info: FieldInfo) -> type:
    """What typer parses: lists are comma-separated text, bools are flags, literals and the rest their base type."""
    inner = _inner(info.annotation)
    if _is_list(info.annotation) or typing.get_origin(inner) is typing.Literal:
        return str
    if inner in (bool, int, float):
        return inner
    return str


def _default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return ""
    if isinstance(value, bool):
        return " Default: on." if value else " Default: off."
    if isinstance(value, list):
        return f" Default: {', '.join(map(str, value))}."  # spaced: a long list wraps instead of being cut
    return f" Default: {value}."


def _negative(name: str) -> str:
    return f"--no-{flag(name)[2:]}"


def parse_list(text: str, item: type, option: str) -> list:
    """Typer has parsed the text; what it holds is quantlab's to check, so a mistake is a one-line error (exit
    code 1), like every other value quantlab validates, not click's usage box."""
    try:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"{option} takes comma-separated values, e.g. 1,8 (not {text[:100]!r})") from None
    if not values:
        raise OptionError(f"{option} is empty")
    return values


def _parameters(
    model: type[BaseModel],
    names: list[str],
    negated: list[str],
    spelled: dict[str, str],
    panel: str,
    extra_help: Callable[[str], str],
) -> list[inspect.Parameter]:
    """One keyword-only typer parameter per field, and a hidden `--no-X` for each field in `negated`."""
    added = []
    for name in names:
        info = model.model_fields[name]
        off = f" {_negative(name)} turns it off." if name in negated else ""
        text = (info.description or "") + _default_text(info) + off + extra_help(name)
        option = typer.Option(spelled.get(name) or flag(name), help=text, rich_help_panel=panel, show_default=False)
        annotation = Annotated[_cli_type(info) | None, option]
        added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    for name in negated:
        # A hidden `--no-X` beside a listed `--X`, instead of typer's `--X/--no-X` pair, whose second column of
        # names left the help of an 80-column terminal too narrow for the longest option names (cut with …).
        hidden = Annotated[bool, typer.Option(_negative(name), hidden=True, show_default=False)]
        added.append(inspect.Parameter(f"no_{name}", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=hidden))
    return added


def model_options(
    model: type[BaseModel],
    names: Iterable[str],
    *,
    into: str,
    panel: str,
    flags: dict[str, str] | None = None,
    extra_help: Callable[[str], str] = lambda _: "",
) -> Callable:
    """Give the decorated command one option per field in `names`; it receives the ones the user set, parsed,
    as a dict in its parameter `into`. `flags` overrides a field's spelling (e.g. `--calib-samples`,
    `--symmetric/--asymmetric`); `extra_help(name)` appends to a field's help (e.g. which methods take it)."""
    names = list(names)
    spelled = flags or {}

    def decorate(func: Callable) -> Callable:
        hints = typing.get_type_hints(func, include_extras=True)
        parameters = inspect.signature(func).parameters.values()
        own = [p.replace(annotation=hints[p.name]) for p in parameters if p.name != into]
        negated = [n for n in names if _cli_type(model.model_fields[n]) is bool and n not in spelled]
        added = _parameters(model, names, negated, spelled, panel, extra_help)

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            chosen = {}
            for name in names:
                value = kwargs.pop(name)
                if name in negated and kwargs.pop(f"no_{name}"):
                    if value:
                        raise OptionError(f"{flag(name)} and {_negative(name)} contradict each other")
                    value = False
                if value is None:
                    continue
                info = model.model_fields[name]
                if _is_list(info.annotation):
                    value = parse_list(value, _item_type(info), flag(name))
                chosen[name] = value
            return func(**kwargs, **{into: chosen})

        params = sorted([*own, *added], key=lambda p: p.kind)  # keyword-only after the positional ones
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def build(
    model: type[BaseModel], values: dict[str, Any], error: type[QuantlabError], spelled: dict[str, str] | None = None
) -> BaseModel:
    """Validate CLI values into the model; a mistake is one line (`error`) naming the option as typed."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise error(f"invalid option {as_flags(describe_validation_error(exc), model, spelled)}") from None


def as_flags(message: str, model: type[BaseModel], spelled: dict[str, str] | None = None) -> str:
    """`max_tokens: ...` → `--max-tokens: ...`: the user typed flags, not field names."""
    key, sep, rest = message.partition(":")
    field, _, index = key.partition(".")  # `concurrency.0`: the first item of a list option
    if sep and field in model.model_fields:
        where = f" (item {int(index) + 1})" if index.isdigit() else (f" ({index})" if index else "")
        return f"{(spelled or {}).get(field, flag(field)).split('/')[0]}{where}:{rest}"
    return message
