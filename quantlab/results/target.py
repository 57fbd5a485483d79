"""A server quantlab did not start (`quantlab bench --load --target URL`), as a record names it.

Such a record has no artifact: quantlab never saw the weights, so it cannot hash them, score their quality or say
which kernel ran. What it can learn it asks the server (`GET /v1/models`, and llama-server's `GET /props`); a probe
that fails or answers with something unreadable leaves its fields "unknown", which is a finding, not an error. A
user may name the artifact they believe the server serves: its identity is kept apart (`named_artifact`), never in
the record's `artifact`, because nothing checked that the server serves those bytes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quantlab.results.schema import Schema

UNKNOWN = "unknown"

NAMED_NOT_VERIFIED = (
    "named by the user with --target, not verified: quantlab did not check that the server serves these files"
)


class ServerProps(Schema):
    """What llama-server's `GET /props` says of itself; a field it did not send (or sent as another type) is
    "unknown" / None."""

    build_info: str = UNKNOWN  # llama.cpp's build number and commit
    model_path: str = UNKNOWN  # the file the server loaded, as the server was started with it
    model_alias: str = UNKNOWN
    total_slots: int | None = None  # requests it serves at once (--parallel)
    n_ctx: int | None = None  # context per slot


class NamedArtifact(Schema):
    """The identity of an artifact the user said the server serves; `note` says that nobody checked."""

    path: str
    digest: str
    label: str  # as tables name artifacts: "method (backend) scheme"
    note: str = NAMED_NOT_VERIFIED


class ExternalTarget(Schema):
    url: str  # the base URL requests went to (…/v1/completions appended)
    model_ids: list[str] | None  # GET /v1/models; None: unknown (see probes)
    props: ServerProps | None  # GET /props (llama-server's); None: unknown, or not a llama-server (see probes)
    probes: list[str]  # one line per probe: what it returned, or why its fields are unknown
    request_model: str  # the `model` field every request carried
    request_fields: dict[str, bool | int | str]  # what every request added to the OpenAI fields (forcing length)
    tokenizer: str  # whose tokenizer cut the prompts (the server re-tokenizes the text)
    named_artifact: NamedArtifact | None = None

    def host_port(self) -> str:
        parts = urlsplit(self.url)
        return parts.netloc or self.url

    def label(self) -> str:
        """How tables name the row: "external: <model id> @ host:port"."""
        model = self.model_ids[0] if self.model_ids else UNKNOWN
        return f"external: {model} @ {self.host_port()}"
