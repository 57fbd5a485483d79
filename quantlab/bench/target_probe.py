"""What an external server says about itself: `GET /v1/models` (every OpenAI-compatible server) and `GET /props`
(llama-server's build and model), read into the record's `ExternalTarget`.

The server is someone else's: any answer may be missing, an error page or JSON of another shape. The parsers take
whatever JSON came back and keep only the fields of the expected type, so nothing a server sends can crash a
measurement; what could not be read is "unknown", with a line saying why. Only a server that cannot be reached at
all is an error: then there is nothing to measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from quantlab.errors import ServeError
from quantlab.results.target import UNKNOWN, ServerProps

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Probed:
    model_ids: list[str] | None
    props: ServerProps | None
    lines: list[str]  # per probe: what it gave, or why its fields are unknown


def base_url(url: str) -> str:
    """`http://host:port[/prefix]`, without a trailing `/` or `/v1` (the load generator appends
    `/v1/completions`); anything else is refused in one line."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServeError(f"--target {url!r}: give the server's base URL, e.g. http://127.0.0.1:8080")
    try:
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        raise ServeError(f"--target {url!r}: the port is not a number") from None
    path = parts.path.rstrip("/").removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


def model_ids(data: Any) -> list[str] | None:
    """The model ids of a `/v1/models` answer (`{"data": [{"id": ...}, ...]}`); None when there are none."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    ids = [e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]
    return ids or None


def server_props(data: Any) -> ServerProps | None:
    """llama-server's `/props` fields of interest; None when the answer has none of them (another server)."""
    if not isinstance(data, dict):
        return None
    settings = data.get("default_generation_settings")
    fields = {
        "build_info": _text(data.get("build_info")),
        "model_path": _text(data.get("model_path")),
        "model_alias": _text(data.get("model_alias")),
        "total_slots": _count(data.get("total_slots")),
        "n_ctx": _count(settings.get("n_ctx")) if isinstance(settings, dict) else None,
    }
    if all(value in (UNKNOWN, None) for value in fields.values()):
        return None
    return ServerProps(**fields)


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value else UNKNOWN


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else None


def probe(url: str) -> Probed:
    """Ask the server at `url` (a `base_url`) what it serves; only a connection that fails is an error."""
    with httpx.Client(timeout=httpx.Timeout(PROBE_TIMEOUT_S)) as client:
        models, models_line = _get(client, url, "/v1/models", model_ids)
        props, props_line = _get(client, url, "/props", server_props)
    return Probed(model_ids=models, props=props, lines=[models_line, props_line])


def _get(client: httpx.Client, url: str, path: str, parse) -> tuple[Any, str]:
    try:
        response = client.get(url + path)
    except httpx.TransportError as exc:
        raise ServeError(f"--target {url}: cannot reach the server ({type(exc).__name__}: {exc})"[:300]) from None
    if response.status_code != 200:
        return None, f"GET {path}: HTTP {response.status_code}, so {UNKNOWN}"
    try:
        parsed = parse(response.json())
    except ValueError:  # not JSON (json.JSONDecodeError is a ValueError)
        return None, f"GET {path}: not JSON, so {UNKNOWN}"
    if parsed is None:
        return None, f"GET {path}: no fields quantlab reads, so {UNKNOWN}"
    return parsed, f"GET {path}: read"
