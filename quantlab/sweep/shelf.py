"""Baseline references shared by machines that share no filesystem, for the length of one Ray run.

A reference is as big as the baseline's log-probs (4 bytes per scored token per vocabulary entry: 1 GB for 2048
tokens of a 128k vocabulary), so it travels as a file, not through Ray's object store (sized for task arguments,
30 % of a node's memory by default, and a task blocked in `ray.get` lends its CPUs to the scheduler). The driver
serves its references directory over HTTP on its node's address: a worker that lacks a reference fetches it by
its content address before it would load the baseline, and a worker that made one publishes it, so the next
node fetches instead of loading the baseline again. The driver checks an upload whole (its name is the content
address of its header, every window's checksum) before it is renamed into place; a wrong or damaged file is
refused and never served. A random token in every URL keeps other processes on the network from reading or
writing the directory by guessing names.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from quantlab.errors import BenchError, ReferenceFileError
from quantlab.reference import Reference, reference_name

NAME = re.compile(r"^reference-[0-9a-f]{16}\.safetensors$")  # reference_name's form: nothing else is served
CHUNK = 1 << 20
TIMEOUT_S = 120.0  # per blocking socket operation, not per file


def checked(path: Path, name: str) -> None:
    """Raise ReferenceFileError unless `path` is a whole reference whose content address is `name`."""
    ref = Reference.open(path)
    if reference_name(ref.header.key()) != name:
        raise ReferenceFileError(f"{name}: its header's content address is {ref.header.key()}")
    for index in range(ref.header.windows):
        ref.logprobs(index)  # reads the window and checks its sha256


def _handler(root: Path, token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _name(self) -> str | None:
            parts = self.path.split("/")
            ok = len(parts) == 3 and parts[0] == "" and secrets.compare_digest(parts[1], token)
            return parts[2] if ok and NAME.match(parts[2]) else None

        def _file(self) -> Path | None:
            name = self._name()
            if name is None or not (root / name).is_file():
                self.send_error(404)
                return None
            return root / name

        def do_HEAD(self) -> None:
            if (path := self._file()) is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()

        def do_GET(self) -> None:
            if (path := self._file()) is None:
                return
            with open(path, "rb") as fh:
                self.send_response(200)
                self.send_header("Content-Length", str(os.fstat(fh.fileno()).st_size))
                self.end_headers()
                shutil.copyfileobj(fh, self.wfile, CHUNK)

        def do_PUT(self) -> None:
            name, length = self._name(), int(self.headers.get("Content-Length") or -1)
            if name is None or length < 0:
                self.send_error(404 if name is None else 411)
                return
            partial = root / f".{name}.{secrets.token_hex(4)}.partial"
            try:
                with open(partial, "wb") as out:
                    left = length
                    while left > 0 and (block := self.rfile.read(min(CHUNK, left))):
                        out.write(block)
                        left -= len(block)
                if left:
                    self.send_error(400, f"upload cut short: {length - left} of {length} bytes")
                    return
                checked(partial, name)
                os.replace(partial, root / name)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except ReferenceFileError as exc:
                reason = str(exc).replace(str(partial), name)[:200]
                self.send_error(422, reason.encode("ascii", "replace").decode())  # a status line is latin-1
            finally:
                partial.unlink(missing_ok=True)

        def log_message(self, format: str, *args) -> None:
            pass  # the run's own progress lines say what moved

    return Handler


class ShelfServer:
    """The driver's references directory, served for as long as the `with` block runs."""

    def __init__(self, root: Path, host: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        self._httpd = ThreadingHTTPServer((host, 0), _handler(root, token))
        self._httpd.daemon_threads = True
        self.shelf = Shelf(f"http://{host}:{self._httpd.server_address[1]}/{token}")
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="reference shelf", daemon=True)

    def __enter__(self) -> ShelfServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass(frozen=True)
class Shelf:
    """A worker's handle on the driver's references (picklable: it travels with each bench task)."""

    url: str

    @property
    def where(self) -> str:
        return self.url.split("/")[2]

    def _request(self, name: str, method: str, **kw) -> urllib.request.Request:
        return urllib.request.Request(f"{self.url}/{name}", method=method, **kw)

    def fetch(self, name: str, dest: Path) -> bool:
        """Copy reference `name` to `dest` (False: the driver has none). The copy is renamed into place whole;
        the reader checks its checksums as it reads, like any reference."""
        partial = dest.parent / f".{dest.name}.{os.getpid()}.partial"
        try:
            with urllib.request.urlopen(self._request(name, "GET"), timeout=TIMEOUT_S) as resp:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(partial, "wb") as out:
                    shutil.copyfileobj(resp, out, CHUNK)
            os.replace(partial, dest)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise BenchError(
                f"reference shelf at {self.where}: fetching {name}: HTTP {exc.code} {exc.reason}"
            ) from None
        except OSError as exc:
            raise BenchError(f"reference shelf at {self.where}: fetching {name}: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)

    def publish(self, path: Path) -> bool:
        """Upload `path` unless the driver has it already; True when this call put it there."""
        try:
            urllib.request.urlopen(self._request(path.name, "HEAD"), timeout=TIMEOUT_S).close()
            return False
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise BenchError(f"reference shelf at {self.where}: HTTP {exc.code} {exc.reason}") from None
        except OSError as exc:
            raise BenchError(f"reference shelf at {self.where}: {exc}") from None
        try:
            with open(path, "rb") as fh:
                size = str(os.fstat(fh.fileno()).st_size)
                request = self._request(path.name, "PUT", data=fh, headers={"Content-Length": size})
                urllib.request.urlopen(request, timeout=TIMEOUT_S).close()
            return True
        except urllib.error.HTTPError as exc:
            raise BenchError(f"reference shelf at {self.where} refused {path.name}: {exc.reason}") from None
        except OSError as exc:
            raise BenchError(f"reference shelf at {self.where}: publishing {path.name}: {exc}") from None
