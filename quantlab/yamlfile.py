"""Reading a YAML file into a pydantic model, with every failure as one line naming the file and the key.

One reader for every YAML quantlab takes (recipes, rigs files), so they fail the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from quantlab.errors import QuantlabError, describe_validation_error, exception_line

M = TypeVar("M", bound=BaseModel)
MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, less its silent last-one-wins on a key given twice in one mapping: a second `bench:`
    section would otherwise replace the first without a word. Keys merged in with `<<` may still be overridden."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != MERGE:
                # No quantlab key holds a line break or a control character, and a message naming such a key
                # would not be one line.
                problem = "given twice" if (key.tag, key.value) in seen else None
                problem = problem or (None if key.value.isprintable() else "is not printable text")
                if problem:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key.value!r} {problem}", key.start_mark)
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message spans lines and starts with its context ("while parsing a block mapping"); the problem
    and where it is are what a user needs."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return exception_line(exc)


def load_yaml_model(path: str | Path, model: type[M], error: type[QuantlabError], what: str) -> M:
    """`what` names the file in messages, e.g. "recipe" → `recipe r.yaml: bench.ctx: ...`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{what} {path}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except ValueError as exc:  # a path no file can have (an embedded NUL)
        raise error(f"{what} {str(path)!r}: cannot read it ({exc})") from exc
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML ({_yaml_problem(exc)})") from exc
    except ValueError as exc:  # a value PyYAML's constructors refuse: an integer over 4300 digits, a 13th month
        raise error(f"{what} {path}: a value cannot be read ({exception_line(exc, 200)})") from exc
    except RecursionError as exc:
        raise error(f"{what} {path}: nested too deeply to read") from exc
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping of keys ({', '.join(model.model_fields)})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{what} {path}: {describe_validation_error(exc)}") from exc
