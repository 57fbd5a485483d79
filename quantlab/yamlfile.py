"""Reading a YAML file into a pydantic model, with every failure as one line naming the file and the key.

One reader for every YAML quantlab takes (recipes, rigs files), so they fail the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from quantlab.errors import QuantlabError, describe_validation_error

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: str | Path, model: type[M], error: type[QuantlabError], what: str) -> M:
    """`what` names the file in messages, e.g. "recipe" → `recipe r.yaml: bench.ctx: ...`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{what} {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping of keys ({', '.join(model.model_fields)})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{what} {path}: {describe_validation_error(exc)}") from exc
