"""Make LM and user text safe to show: keys blanked, hidden characters made visible, HTML escaped.

Why: almost every string in a report (outputs, feedback, demos, field names, even constraint names)
came from an LM or a notebook user, the ipywidgets `HTML` widget injects its value raw, and a
report ends up on a projector and in the saved notebook. Key blanking is `lm.redact`'s; this
module only reads the environment once per rendering instead of once per string.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
from collections.abc import Iterator, Mapping
from typing import Any

from ..lm.redact import redact, secret_env_values

# Invisible or direction-changing characters that can make shown text lie about what it is.
_INVISIBLE = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
              *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF,
              # Lone surrogates (half an emoji from a cut-off JSON escape) cannot be encoded as UTF-8: the
              # kernel could not send a report holding one, nor could the notebook be saved.
              *range(0xD800, 0xE000)]
_VISIBLE = {c: f"\\u{c:04x}" for c in _INVISIBLE}


class _Rendering:
    """What one rendering reads once: the secret values, and the cleaned form of each text seen (reports
    repeat text: a counterexample's inputs are its example's, shown again for every constraint)."""

    def __init__(self) -> None:
        self.secrets = tuple(secret_env_values())
        self.redacted: dict[str, str] = {}
        self.cleaned: dict[str, str] = {}


_RENDERING: contextvars.ContextVar[_Rendering | None] = contextvars.ContextVar("lmassert_rendering", default=None)


@contextlib.contextmanager
def secrets_hidden() -> Iterator[None]:
    """Read the secret environment values once for a whole rendering (`clean` runs once per string)."""
    token = _RENDERING.set(_Rendering())
    try:
        yield
    finally:
        _RENDERING.reset(token)


def hide_secrets(text: str) -> str:
    """`lm.redact`: blank API keys (secret environment values, key-shaped strings, URL passwords); an LM
    error, or an LM echoing its prompt, can carry one."""
    rendering = _RENDERING.get()
    if rendering is None:
        return redact(text)
    redacted = rendering.redacted.get(text)
    if redacted is None:
        redacted = rendering.redacted[text] = redact(text, secrets=rendering.secrets)
    return redacted


def hide_secrets_in(value: Any) -> Any:
    """`hide_secrets` over the strings inside lists, tuples and dicts (table cells hold those)."""
    if isinstance(value, str):
        return hide_secrets(value)
    if isinstance(value, (list, tuple)):
        return type(value)(hide_secrets_in(v) for v in value)
    if isinstance(value, Mapping):
        return {k: hide_secrets_in(v) for k, v in value.items()}
    return value


def clean(text: str) -> str:
    """Blank API keys, and make control, zero-width and bidi-override characters visible, so text
    cannot disguise itself."""
    rendering = _RENDERING.get()
    if rendering is None:
        return redact(text).translate(_VISIBLE)
    cleaned = rendering.cleaned.get(text)
    if cleaned is None:
        cleaned = rendering.cleaned[text] = hide_secrets(text).translate(_VISIBLE)
    return cleaned


def to_text(value: Any) -> str:
    """A readable one-string form of a field value (lists become bullet lines)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join("• " + to_text(v) for v in value)
    if isinstance(value, Mapping):
        return "\n".join(f"{to_text(k)}: {to_text(v)}" for k, v in value.items())
    return str(value)


def escape_text(text: str) -> str:
    """HTML-escape already cleaned text (quotes too, so it is also safe inside an attribute)."""
    return html.escape(text, quote=True)


def esc(value: Any) -> str:
    """Clean and HTML-escape any value: what every `{{ value }}` in the report's templates does."""
    return html.escape(clean(to_text(value)), quote=True)


def short(text: str, n: int) -> str:
    """`text` cut to `n` characters with an ellipsis."""
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = ["clean", "esc", "escape_text", "hide_secrets", "hide_secrets_in", "secrets_hidden", "short", "to_text"]
