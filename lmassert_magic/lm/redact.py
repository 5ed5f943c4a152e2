"""Keep API keys out of anything the package prints, renders or exports.

Keys live only in environment variables (LiteLLM and DSPy read them there at call time). Reports,
exports and `%lm` output pass their text through :func:`redact`, which blanks the values of
secret-looking environment variables and strings shaped like well-known key formats, so that a key
pasted into a prompt, an error message or a URL does not end up on a projector or in a notebook file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

__all__ = ["REDACTED", "is_secret_name", "redact", "secret_env_values"]

REDACTED = "[REDACTED]"

# Values shorter than this are too likely to occur in ordinary text ("true", "local", "1234").
MIN_SECRET_LENGTH = 8

# A name is secret-looking when one of its underscore-separated words is one of these...
_SECRET_WORDS = frozenset(
    {
        "APIKEY",
        "TOKEN",
        "TOKENS",
        "SECRET",
        "SECRETS",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "CREDENTIALS",
        "PAT",
    }
)
# ...or when it ends with one of these (OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY, SSH_PRIVATE_KEY, GPG_KEY).
_SECRET_SUFFIXES = ("_KEY", "_API_KEY", "_ACCESS_KEY", "_PRIVATE_KEY", "_SIGNING_KEY")
# Words that look secret-ish but name well-known harmless variables.
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "GPG_AGENT_INFO", "TOKENIZERS_PARALLELISM"})

# Well-known key shapes, for keys that never were in this process's environment (pasted into a cell).
_KEY_PATTERNS = re.compile(
    r"""
    \bsk-(?:proj-|ant-(?:api\d\d-)?|or-v1-|svcacct-)?[A-Za-z0-9_\-]{16,}   # OpenAI, Anthropic, OpenRouter
    | \bgh[pousr]_[A-Za-z0-9]{30,}                                          # GitHub tokens
    | \bgithub_pat_[A-Za-z0-9_]{30,}
    | \bhf_[A-Za-z0-9]{30,}                                                 # Hugging Face
    | \bgsk_[A-Za-z0-9]{30,}                                                # Groq
    | \br8_[A-Za-z0-9]{30,}                                                 # Replicate
    | \bxox[abposr]-[A-Za-z0-9\-]{10,}                                      # Slack
    | \bAKIA[0-9A-Z]{16}\b                                                  # AWS access key id
    | \bAIza[0-9A-Za-z_\-]{35}                                              # Google API key
    | \bglpat-[A-Za-z0-9_\-]{20,}                                           # GitLab
    | (?<=[Bb]earer\s)[A-Za-z0-9._~+/\-]{16,}=*                             # Authorization: Bearer <token>
    """,
    re.VERBOSE,
)
# Credentials embedded in URLs: scheme://user:password@host
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s@:]*:[^/\s@]+)@")


def _may_hold_a_key(text: str) -> bool:
    """Every key shape above contains "_" or "-", starts with AKIA or AIza, or follows "Bearer". Text holding
    none of these skips the pattern, which is tried at every position (a report redacts megabytes of LM
    text; a substring search is a hundred times faster)."""
    return "_" in text or "-" in text or "AKIA" in text or "AIza" in text or "earer" in text


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a credential."""
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return False
    if upper.endswith(_SECRET_SUFFIXES) or upper in {"KEY", "API_KEY", "APIKEY"}:
        return True
    words = set(re.split(r"[_\-.]+", upper))
    return bool(words & _SECRET_WORDS)


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables (length >= 8), longest first."""
    env = os.environ if environ is None else environ
    values = {value for name, value in env.items() if is_secret_name(name) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None, *, secrets: Iterable[str] | None = None) -> str:
    """Return `text` with secret env-var values, key-shaped strings and URL passwords replaced.

    The environment is read on every call, so a key exported after import is still caught; a caller
    redacting many strings at once passes `secrets` (`secret_env_values()`, read once) instead.
    """
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text
    for value in secret_env_values(environ) if secrets is None else secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    if _may_hold_a_key(text):
        text = _KEY_PATTERNS.sub(REDACTED, text)
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return text
