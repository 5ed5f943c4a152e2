"""The LM layer: the embedded offline model by default, any LiteLLM id or OpenAI-compatible server on demand.

Why a layer: a notebook should run with no setup (`ensure_lm()` falls back to the embedded
SmolLM2-135M model), switch LMs in one line (`configure_lm("openai/gpt-4o-mini")`), and never show
a key (`describe_lm()`, `redact()`). No IPython import here: the `%lm` magic lives in
`lmassert_magic.magics.lm`.
"""

from __future__ import annotations

import os
from typing import Any

import dspy

from .adapter import AutoAdapter, SchemaJSONAdapter, output_json_schema, response_format_for, wants_json_schema
from .local import (
    GGUF_ENV,
    INSTALL_HINT,
    EmbeddedEngine,
    LocalModelUnavailable,
    LocalServer,
    find_gguf,
    get_local_server,
    is_embedded_lm,
    is_loopback_host,
    local_lm,
    local_model_available,
    local_server_running,
    local_server_url,
    shutdown_local_server,
)
from .redact import REDACTED, is_secret_name, redact
from .remote import API_KEY_ENV, provider_key_env, remote_lm, server_lm

__all__ = [
    "API_KEY_ENV",
    "GGUF_ENV",
    "INSTALL_HINT",
    "REDACTED",
    "AutoAdapter",
    "EmbeddedEngine",
    "LocalModelUnavailable",
    "LocalServer",
    "SchemaJSONAdapter",
    "configure_lm",
    "describe_lm",
    "ensure_lm",
    "find_gguf",
    "get_local_server",
    "is_embedded_lm",
    "is_loopback_host",
    "is_secret_name",
    "local_lm",
    "local_model_available",
    "local_server_running",
    "local_server_url",
    "output_json_schema",
    "redact",
    "remote_lm",
    "response_format_for",
    "server_lm",
    "shutdown_local_server",
    "wants_json_schema",
]

LOCAL_SPECS = frozenset({"local", "embedded", "smollm2"})


def _apply_settings(**values: Any) -> None:
    """`dspy.configure(...)`, also inside a `dspy.context(...)` block.

    Inside a context block DSPy reads the block's overrides first, so a plain `dspy.configure` would
    seem to do nothing there (a notebook cell run under a context, or a test fixture). The block's
    overrides are updated too; they are discarded when the block exits, as any override is.
    """
    dspy.configure(**values)
    try:
        from dspy.dsp.utils.settings import thread_local_overrides
    except ImportError:  # pragma: no cover - DSPy internals moved
        return
    overrides = thread_local_overrides.get()
    for key, value in values.items():
        if key in overrides:
            overrides[key] = value


def _adapter_update() -> dict[str, Any]:
    """Install AutoAdapter unless the user chose another adapter themselves."""
    current = dspy.settings.adapter
    if current is None or isinstance(current, AutoAdapter):
        return {"adapter": current if isinstance(current, AutoAdapter) else AutoAdapter()}
    return {}


def configure_lm(
    spec: str = "local",
    api_base: str | None = None,
    *,
    api_key_env: str | None = None,
    json_schema: bool | None = None,
    **lm_kwargs: Any,
) -> dspy.LM:
    """Build an LM from a short spec, make it DSPy's default (`dspy.configure(lm=...)`) and return it.

    - ``"local"``: the embedded SmolLM2-135M model (grammar-constrained JSON output).
    - a LiteLLM id such as ``"openai/gpt-4o-mini"``: `dspy.LM(id)`; the key comes from the provider's
      environment variable (``OPENAI_API_KEY``...), read by DSPy at call time.
    - with `api_base`: a model on an OpenAI-compatible server (Ollama, vLLM, llama.cpp), reached as
      ``openai/<name>``; its key, if any, from ``$LMASSERT_API_KEY`` (or `api_key_env`).

    `json_schema=True` asks for grammar-constrained JSON output from a server that supports
    ``response_format`` json_schema (llama.cpp, vLLM, recent Ollama); `False` turns it off for the
    embedded model. Other keyword arguments go to `dspy.LM` (``temperature``, ``max_tokens``, ``cache``...).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("an LM spec is required: 'local' or a LiteLLM id such as 'openai/gpt-4o-mini'")
    spec = spec.strip()
    if spec.lower() in LOCAL_SPECS:
        if api_base:
            raise ValueError("'local' is the embedded model and takes no api_base; give the server's model name")
        if api_key_env:
            raise ValueError("'local' is the embedded model and needs no key")
        lm = local_lm(**lm_kwargs)
    elif api_base:
        lm = server_lm(spec, api_base, api_key_env=api_key_env, **lm_kwargs)
    else:
        if api_key_env:
            raise ValueError("api_key_env applies to an api_base server; hosted providers read their own variables")
        lm = remote_lm(spec, **lm_kwargs)
    if json_schema is not None:
        lm.constrain_json_schema = bool(json_schema)
    _apply_settings(lm=lm, **_adapter_update())
    return lm


def ensure_lm() -> dspy.BaseLM:
    """The configured `dspy.settings.lm`, or the embedded model, configured now, when there is none.

    Also installs :class:`AutoAdapter` when the LM wants constrained output and no adapter is set, so a
    user's own ``dspy.configure(lm=local_lm())`` gets grammar-constrained JSON too.
    """
    lm = dspy.settings.lm
    if lm is None:
        return configure_lm("local")
    if wants_json_schema(lm) and dspy.settings.adapter is None:
        _apply_settings(adapter=AutoAdapter())
    return lm


def _fmt_options(lm: Any) -> str:
    kwargs = getattr(lm, "kwargs", {}) or {}
    shown = []
    for key in ("temperature", "max_tokens", "max_completion_tokens", "top_p", "n", "rollout_id"):
        if kwargs.get(key) is not None:
            shown.append(f"{key}={kwargs[key]}")
    if getattr(lm, "cache", True) is False:
        shown.append("cache=off")
    return ", ".join(shown)


def _key_status(lm: Any) -> str:
    kwargs = getattr(lm, "kwargs", {}) or {}
    if kwargs.get("api_base"):
        key = kwargs.get("api_key")
        if not key or key == "local":
            return f"no key (set ${API_KEY_ENV} if the server needs one)"
        return f"key from the environment ({REDACTED})"
    name = provider_key_env(getattr(lm, "model", ""))
    if name is None:
        return "key read by LiteLLM from the environment"
    return f"key ${name} " + ("set" if os.environ.get(name) else "NOT set")


def _adapter_label(lm: Any) -> str:
    adapter = dspy.settings.adapter
    if wants_json_schema(lm) and (adapter is None or isinstance(adapter, (AutoAdapter, SchemaJSONAdapter))):
        if adapter is None:
            return "ChatAdapter (run ensure_lm() or %lm local for JSON-schema output)"
        return "JSON schema, grammar-constrained"
    if adapter is None or isinstance(adapter, AutoAdapter):
        return "ChatAdapter"
    return type(adapter).__name__


def describe_lm(lm: dspy.BaseLM | None = None) -> str:
    """One line saying which LM is in use and how it is reached; keys never appear (redacted)."""
    if lm is None:
        lm = dspy.settings.lm
    if lm is None:
        if local_model_available():
            return f"no LM configured: the embedded model ({find_gguf().stem}) will be used on first call"
        return f"no LM configured, and the embedded model is not installed ({INSTALL_HINT})"
    if is_embedded_lm(lm):
        where = local_server_url() if local_server_running() else "starts on first call"
        parts = [f"local: {lm.model.split('/', 1)[-1]} (embedded llama.cpp, {where})"]
    else:
        model = getattr(lm, "model", None) or type(lm).__name__
        kwargs = getattr(lm, "kwargs", {}) or {}
        if kwargs.get("api_base"):
            parts = [f"{model} at {kwargs['api_base']}", _key_status(lm)]
        elif type(lm).__module__.startswith("dspy.clients"):
            parts = [str(model), _key_status(lm)]
        else:
            parts = [f"{type(lm).__name__}({model!r})"]
    options = _fmt_options(lm)
    if options:
        parts.append(options)
    parts.append(f"output: {_adapter_label(lm)}")
    return redact("; ".join(parts))
