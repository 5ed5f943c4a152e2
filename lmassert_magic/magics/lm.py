"""`%lm`: choose the notebook's LM in one line (embedded model, hosted LiteLLM id, or a local server).

Kept thin: parsing and messages live here, the work in :mod:`lmassert_magic.lm`. Keys are never
typed into a cell: hosted providers read theirs from environment variables.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..lm import LocalModelUnavailable, configure_lm, describe_lm, redact
from .parsing import one_line, parse_line

__all__ = ["LMMagics"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0])


def _clean(text: str) -> str:
    """One line, with key-shaped strings and secret environment values blanked (the line may hold a key)."""
    return one_line(redact(text))


@magics_class
class LMMagics(Magics):
    """The `%lm` line magic."""

    @magic_arguments()
    @argument(
        "spec",
        nargs="?",
        default=None,
        help=(
            "'local' for the embedded offline model (SmolLM2-135M, the default), or a LiteLLM id such as "
            "'openai/gpt-4o-mini' (key from OPENAI_API_KEY etc.), or, with --api-base, the model name on an "
            "OpenAI-compatible server. Omit to show the LM in use."
        ),
    )
    @argument(
        "--api-base",
        dest="api_base",
        default=None,
        help="URL of an OpenAI-compatible server (Ollama, vLLM, llama.cpp), e.g. http://localhost:11434/v1",
    )
    @argument(
        "--api-key-env",
        dest="api_key_env",
        default=None,
        help="environment variable holding the --api-base server's key (default LMASSERT_API_KEY)",
    )
    @argument("--temperature", "-t", type=float, default=None, help="sampling temperature (>= 0)")
    @argument("--max-tokens", "-m", dest="max_tokens", type=int, default=None, help="maximum tokens per response")
    @argument(
        "--json-schema",
        dest="json_schema",
        action="store_true",
        default=None,
        help="constrain output with a JSON schema (servers supporting response_format json_schema)",
    )
    @argument("--no-cache", dest="no_cache", action="store_true", help="do not use DSPy's response cache")
    @line_magic
    def lm(self, line: str = "") -> None:
        """Choose the LM for this notebook, or show the one in use.

        Examples::

            %lm                                  # show what is configured
            %lm local                            # the embedded offline model (no key, no network)
            %lm openai/gpt-4o-mini -t 0.7        # a hosted model; key from $OPENAI_API_KEY
            %lm llama3.2 --api-base http://localhost:11434/v1 --json-schema   # Ollama
        """
        args = parse_line(self.lm, line, where="%lm", clean=_clean)
        if args.spec is None:
            if any(v is not None for v in (args.api_base, args.api_key_env, args.temperature, args.max_tokens)):
                raise UsageError("%lm: name the LM to configure, e.g. `%lm local --temperature 0.7`")
            print(describe_lm())
            return
        lm_kwargs: dict[str, Any] = {}
        if args.temperature is not None:
            if not 0.0 <= args.temperature <= 2.0:
                raise UsageError(f"%lm: --temperature must be between 0 and 2, got {args.temperature}")
            lm_kwargs["temperature"] = args.temperature
        if args.max_tokens is not None:
            if args.max_tokens < 1:
                raise UsageError(f"%lm: --max-tokens must be a positive integer, got {args.max_tokens}")
            lm_kwargs["max_tokens"] = args.max_tokens
        if args.no_cache:
            lm_kwargs["cache"] = False
        try:
            configure_lm(
                args.spec,
                api_base=args.api_base,
                api_key_env=args.api_key_env,
                json_schema=args.json_schema,
                **lm_kwargs,
            )
        except (LocalModelUnavailable, ValueError, TypeError) as exc:
            raise UsageError(f"%lm: {_first_line(exc)}") from None
        print(describe_lm())
