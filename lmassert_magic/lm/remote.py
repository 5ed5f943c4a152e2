"""Hosted LMs (any LiteLLM id) and self-hosted OpenAI-compatible servers (Ollama, vLLM, llama.cpp).

Keys are never passed in code or stored by this package: hosted providers' keys are read from their
usual environment variables by DSPy/LiteLLM at call time; a self-hosted server's key, if it needs
one, comes from the environment variable named by ``api_key_env`` (default ``LMASSERT_API_KEY``),
never from ``OPENAI_API_KEY``, so an OpenAI key is not sent to some other server.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import urlparse

import dspy

__all__ = ["API_KEY_ENV", "provider_key_env", "remote_lm", "server_lm"]

API_KEY_ENV = "LMASSERT_API_KEY"
_PLACEHOLDER_KEY = "local"
_SPEC = re.compile(r"^[\w.\-:/@+]+$")

# Environment variables LiteLLM reads for common providers (for describing, never for reading keys here).
_PROVIDER_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "cohere": "COHERE_API_KEY",
    "fireworks_ai": "FIREWORKS_API_KEY",
    "xai": "XAI_API_KEY",
    "perplexity": "PERPLEXITYAI_API_KEY",
    "databricks": "DATABRICKS_TOKEN",
}


def check_spec(spec: str) -> str:
    """Validate an LM id (``provider/model`` or a bare model name) and return it stripped."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("an LM id is required, e.g. 'openai/gpt-4o-mini' or 'local'")
    spec = spec.strip()
    if not _SPEC.match(spec) or spec.endswith("/") or spec.startswith("/"):
        raise ValueError(f"{spec!r} is not an LM id; expected e.g. 'openai/gpt-4o-mini' or 'ollama_chat/llama3.2'")
    return spec


def provider_key_env(model: str) -> str | None:
    """The environment variable LiteLLM reads the key from for `model`'s provider, when well known."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return _PROVIDER_KEY_ENV.get(provider)


def remote_lm(spec: str, **lm_kwargs: Any) -> dspy.LM:
    """`dspy.LM(spec)` for a hosted model; the provider key is read from the environment at call time."""
    spec = check_spec(spec)
    if "api_key" in lm_kwargs:
        raise ValueError("pass API keys through environment variables (e.g. OPENAI_API_KEY), not as arguments")
    return dspy.LM(spec, **lm_kwargs)


def server_lm(spec: str, api_base: str, *, api_key_env: str | None = None, **lm_kwargs: Any) -> dspy.LM:
    """An LM on an OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio) at `api_base`.

    The model is reached through the OpenAI route, ``openai/<name>`` (a leading ``openai/`` in `spec`
    is kept, anything else, including ``org/model`` names, is the server's model name). The key is
    ``$LMASSERT_API_KEY`` (or the variable named by `api_key_env`), else the placeholder ``"local"``.
    """
    spec = check_spec(spec)
    parsed = urlparse(api_base or "")
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ValueError(f"api_base must be an http(s) URL such as http://localhost:11434/v1, got {api_base!r}")
    if "api_key" in lm_kwargs:
        raise ValueError("pass the server's key through an environment variable (api_key_env), not as an argument")
    model = spec if spec.startswith("openai/") else f"openai/{spec}"
    key = os.environ.get(api_key_env or API_KEY_ENV) or _PLACEHOLDER_KEY
    return dspy.LM(model, api_base=api_base.rstrip("/"), api_key=key, **lm_kwargs)
