"""The failure families a user can meet.

The CLI catches `QuantlabError` once and prints its message as one line with a non-zero exit code, so every
message must stand on its own: say what was wrong, with which input, and what to do instead.
"""


class QuantlabError(Exception):
    """Base of every failure the CLI reports as one line."""


class ModelNotFoundError(QuantlabError):
    """MODEL is neither a local HF directory, nor `default`, nor reachable on the hub."""


class SpecError(QuantlabError):
    """A method specification that cannot work (unknown method, bits, group size ...)."""


class BackendUnavailableError(QuantlabError):
    """The backend exists but cannot run here (library missing, needs CUDA, ...)."""


class QuantizationError(QuantlabError):
    """The backend library failed while quantizing."""


class ArtifactError(QuantlabError):
    """A directory that is not a usable quantlab artifact (no or corrupt manifest, missing files)."""


class DatasetError(QuantlabError):
    """A dataset name or path that cannot be loaded, or is too short for the protocol."""


class RigError(QuantlabError):
    """An unknown rig, a bad rigs file, or a rig that does not match the hardware measured on."""


class BenchError(QuantlabError):
    """A measurement that cannot be made as asked (e.g. a baseline with another tokenizer)."""


class ResultsError(QuantlabError):
    """A results file that cannot be read."""


class ReferenceFileError(QuantlabError):
    """A baseline reference file that cannot be used: not one, cut short, corrupt, or made for another stream."""


class OptionError(QuantlabError):
    """A command-line option value that parses but cannot be used (a list with a non-number, a setting of the
    mode not running): one line and exit 1, like any value quantlab checks, not the parser's usage box."""


class ServeError(QuantlabError):
    """A server that cannot be started, did not become ready, or died while being measured."""


def exception_line(exc: BaseException, limit: int = 300, *, last: bool = False) -> str:
    """`Type: first line of the message`, for a library's exception quoted inside a one-line report (their
    messages often run to tracebacks or hints over many lines); `last`: its last line instead, where a message
    ends with the error after a traceback (Ray's task errors). An empty message gives the type alone."""
    lines = str(exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[-1 if last else 0][:limit]}".rstrip(": ")


def describe_validation_error(exc) -> str:
    """A pydantic ValidationError as one line, `key.path: message`, naming the first offending key.

    One line is the contract of every user-facing error; pydantic's own message spans several.
    """
    errors = exc.errors()
    # A misspelt key shows up twice: as an unknown key and as the key it should have been, missing. The
    # unknown one is the useful half.
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    first = extra[0] if extra else errors[0]
    text = first["msg"].removeprefix("Value error, ")  # a validator's own sentence needs no pydantic prefix
    message = f"{_where(first)}: {text}" if first["loc"] else text
    missing = [_where(e) for e in errors if e["type"] == "missing"]
    if extra and missing:
        message += f" (and missing: {', '.join(missing)})"
    return message


def _where(error) -> str:
    # a key that is not printable text (a line break in a YAML key) is quoted, so the message stays one line
    parts = (str(part) if str(part).isprintable() else repr(part) for part in error["loc"])
    return ".".join(parts) or "(top level)"
