"""The embedded model's llama.cpp server: one per process, on loopback only, silent, stopped at exit.

Started on first use (:func:`get_local_server`); a forked child drops its parent's server and starts
its own. Requests are run in-process (`LocalServer.chat`); the same server also listens on
``http://127.0.0.1:PORT/v1`` for other processes (:func:`local_server_url`).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .local_install import LocalModelUnavailable, find_gguf, import_xllamacpp

# Defaults for the shared server. 8192 tokens per slot is SmolLM2's training context: enough for
# few-shot prompts with several demos. Two slots let DSPy's parallel Evaluate overlap two requests
# (measured: ~1.2x the throughput of one slot on 2 cores).
DEFAULT_CTX_PER_SLOT = 8192
DEFAULT_PARALLEL = 2
DEFAULT_THREADS = 2
THREADS_ENV = "LMASSERT_THREADS"
#: "1": let llama.cpp decode concurrent requests in one batch (faster with threads; outputs then depend
#: on which requests happen to share a batch). Default: one request at a time.
BATCH_ENV = "LMASSERT_BATCH"
REPEAT_PENALTY = 1.1


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1): the only binds allowed."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


def batch_from_env() -> bool:
    """$LMASSERT_BATCH as a bool (unset: False, one request at a time)."""
    raw = os.environ.get(BATCH_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValueError(f"${BATCH_ENV} must be 1 (batch concurrent requests) or 0 (one at a time), got {raw!r}")


def threads_from_env() -> int:
    """Decode threads: $LMASSERT_THREADS, else 2.

    On a 2-core machine that is also busy with another CPU-heavy process (a second model, a browser),
    two llama.cpp threads can stall at every barrier (measured: ~100 tok/s idle, <1 tok/s contended);
    ``LMASSERT_THREADS=1`` trades half the idle speed for immunity to that.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {raw!r}")
    return value


@contextlib.contextmanager
def _silenced_fd(fd: int) -> Iterator[Any]:
    """Send everything written to file descriptor `fd` to a temporary file, then put `fd` back.

    llama.cpp writes its logs straight to fd 2, bypassing `sys.stderr`, and ipykernel forwards fd-level
    output into the cell. The captured text is kept so a failed start can show its tail.
    """
    stream = sys.__stderr__ if fd == 2 else sys.__stdout__
    with contextlib.suppress(Exception):
        if stream is not None:
            stream.flush()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(fd)
        try:
            os.dup2(capture.fileno(), fd)
            yield capture
        finally:
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
            os.dup2(saved, fd)
            os.close(saved)


def _tail(capture: Any, limit: int = 1500) -> str:
    with contextlib.suppress(Exception):
        capture.seek(0)
        return capture.read().decode("utf-8", "replace").strip()[-limit:]
    return ""


class LocalServer:
    """One llama.cpp server (xllamacpp) for the embedded model, on a loopback port.

    Create it through :func:`get_local_server` to share one per process. `chat` runs a chat completion
    in-process (the GIL is released while llama.cpp works, so DSPy threads overlap).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        n_parallel: int = DEFAULT_PARALLEL,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        batch_requests: bool | None = None,
    ) -> None:
        if not is_loopback_host(host):
            raise ValueError(
                f"refusing to bind the embedded model server to {host!r}: only loopback addresses "
                "(127.0.0.1, ::1, localhost) are allowed, so the model is never exposed to the network"
            )
        if n_threads is None:
            n_threads = threads_from_env()
        if batch_requests is None:
            batch_requests = batch_from_env()  # a bad value fails before the model loads
        if n_parallel < 1 or n_threads < 1:
            raise ValueError("n_parallel and n_threads must be >= 1")
        xllamacpp = import_xllamacpp()
        self.model_path = Path(model_path) if model_path is not None else find_gguf()
        if not self.model_path.is_file():
            raise LocalModelUnavailable(f"GGUF file {str(self.model_path)!r} not found")
        self.host = "127.0.0.1" if host.strip().lower() == "localhost" else host.strip().strip("[]")
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx or DEFAULT_CTX_PER_SLOT * n_parallel
        self.n_threads = n_threads
        self.pid = os.getpid()

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.hostnames = [self.host]
        params.port = int(port)  # 0: the OS picks a free port
        params.n_ctx = self.n_ctx
        params.n_parallel = n_parallel
        params.use_jinja = True  # without the chat template the model answers garbage
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
        # llama.cpp's classic default. Without it the 135M model often loops inside a JSON string
        # ("8 * 7 = 60, 8 * 7 = 60, ...") until max_tokens and the output cannot parse (9 of 100
        # questions at 1.0, 0 of those 9 at 1.1). Server-wide, so HTTP clients see the same model.
        params.sampling.penalty_repeat = REPEAT_PENALTY
        params.verbosity = 0  # no per-request logs once running
        # Loopback is not enough against a web page in the user's browser: no cross-origin reads (CORS
        # only for the server's own origin), no web UI, no /slots (it would show other requests' prompts).
        params.cors_origins = f"http://{self.host}"
        params.cors_origins_explicit = True
        params.cors_credentials = False
        params.ui = False
        params.endpoint_slots = False
        params.endpoint_metrics = False
        started = time.perf_counter()
        with _silenced_fd(2) as capture:
            try:
                self._server = xllamacpp.Server(params)
            except Exception as exc:
                log = _tail(capture)
                raise RuntimeError(
                    f"the embedded llama.cpp server failed to start on {self.model_path.name}: {exc}"
                    + (f"\n--- llama.cpp log (tail) ---\n{log}" if log else "")
                ) from exc
        self.start_seconds = time.perf_counter() - started  # model load + bind, reported by the benchmark
        self.address = str(self._server.listening_address).rstrip("/")
        self._closed = False
        self._init_request_order(batch_requests)

    def _init_request_order(self, batch_requests: bool | None = None) -> None:
        """Decide whether in-process requests may share a decoding batch.

        llama.cpp decodes the requests of its slots together, and a batch's shape changes the floating
        point sums: measured on the quickstart, two evaluation threads gave another output for 30 of 213
        repeated prompts, and other tables. One request at a time keeps a seeded run's outputs the same
        whatever the number of threads (threads still overlap the Python work around each call).
        """
        self.batch_requests = batch_from_env() if batch_requests is None else bool(batch_requests)
        self._one_at_a_time = threading.Lock()
        self._counting = threading.Lock()
        self.requests_served = 0  # completions the model decoded (cache hits never get here): run metadata shows it

    @property
    def url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.address}/v1"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[-1])

    @property
    def closed(self) -> bool:
        return self._closed

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run one OpenAI-style chat completion in-process and return the response body."""
        if self._closed:
            raise RuntimeError("the embedded model server has been shut down")
        if self.batch_requests:
            result = self._server.handle_chat_completions(body)
        else:
            # and no reuse of a slot's cached prompt prefix: which slot holds which prefix depends on the
            # order requests arrive in, and a reused prefix was computed in another batch shape (measured:
            # one at a time with reuse, 11 of 284 repeated prompts still got another output with 2 threads)
            with self._one_at_a_time:
                result = self._server.handle_chat_completions({**body, "cache_prompt": False})
        with self._counting:
            self.requests_served += 1
        if isinstance(result, (str, bytes)):
            result = json.loads(result)
        return result

    def close(self) -> None:
        """Stop the server (llama.cpp joins its threads when the handle is released)."""
        if self._closed:
            return
        self._closed = True
        server, self._server = self._server, None
        with _silenced_fd(2):
            del server

    def __deepcopy__(self, memo: dict[int, Any]) -> LocalServer:
        return self  # a process resource: copies of programs share it

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.url
        return f"LocalServer({self.model_path.name}, {state}, slots={self.n_parallel}, n_ctx={self.n_ctx})"


_lock = threading.Lock()
_shared: LocalServer | None = None


def get_local_server() -> LocalServer:
    """The process-wide embedded server, started on first call (about 1 s)."""
    global _shared
    server = _shared
    if server is not None and not server.closed and server.pid == os.getpid():
        return server
    with _lock:
        server = _shared
        if server is None or server.closed or server.pid != os.getpid():  # a forked child starts its own
            server = LocalServer()
            _shared = server
        return server


def local_server_running() -> bool:
    """Whether the shared server has been started (and not stopped) in this process."""
    server = _shared
    return server is not None and not server.closed and server.pid == os.getpid()


def local_server_url() -> str:
    """Base URL of the shared server (``http://127.0.0.1:PORT/v1``), starting it if needed.

    Other processes (e.g. a DSPy 2.5 venv in a benchmark) can reach the same model with
    ``dspy.LM("openai/local", api_base=local_server_url(), api_key="local")``.
    """
    return get_local_server().url


def shutdown_local_server() -> None:
    """Stop the shared server; the next use starts a new one. Registered with `atexit`."""
    global _shared
    with _lock:
        server, _shared = _shared, None
    if server is not None and server.pid == os.getpid():
        server.close()


atexit.register(shutdown_local_server)


def _forget_parent_server() -> None:
    """In a forked child, drop the parent's server without ever destroying it.

    Its llama.cpp threads do not exist in the child; running its destructor there aborts the
    process at exit (seen with `multiprocessing` fork workers). The handle is leaked on purpose and
    the child starts its own server if it needs one.
    """
    global _shared, _lock
    _lock = threading.Lock()
    server, _shared = _shared, None
    if server is not None:
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.pythonapi.Py_IncRef(ctypes.py_object(server))
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(server._server))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_server)
