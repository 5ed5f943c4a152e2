"""The Jinja2 environment every part of the report renders with: escaping by default, inline styles.

Why its own module: the static report (`static_html`) and the views it embeds (`timeline`) share
one environment, and `static_html` imports those views. Every `{{ value }}` is cleaned (keys
blanked, hidden characters shown: `escape.clean`) and HTML-escaped by the environment's `finalize`.
"""

from __future__ import annotations

from typing import Any

import jinja2
from markupsafe import Markup

from ..engine.ablation import COMPILE
from .escape import clean, esc, escape_text, short, to_text
from .model import FAILURE_LIMIT, calibration_note, counterexample_mode_text, number, rate_parts

#: Text longer than this is cut and the rest put behind an expand control (<details>).
TEXT_LIMIT = 280
HARD_COLOR = "#b3261e"
SOFT_COLOR = "#1f6f8b"
ALL_COLOR = "#8a6d00"

_CELL = "border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left"
#: Inline styles only: notebook sanitisers strip <style> blocks and classes have no stylesheet.
_STYLES = {
    "BASE_STYLE": "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.4",
    "CELL": _CELL,
    "LABEL_CELL": f"{_CELL};font-weight:600;white-space:nowrap;width:1%",
    "NUM": "border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:right;"
           "font-variant-numeric:tabular-nums",
    "VALUE": "white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.35;"
             "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px",
    "TABLE": "border-collapse:collapse;margin:4px 0",
}
#: The report's font, for views that wrap a fragment themselves (`timeline.TimelineView`).
BASE_STYLE = _STYLES["BASE_STYLE"]


# ------------------------------------------------------------------------------------------- environment


class _Cleaned(str):
    """Text already through `clean`: the templates escape it without cleaning it twice."""


def _shown(value: Any) -> Markup:
    """The environment's `finalize`: what every `{{ value }}` becomes. Markup (a macro's output, a style
    constant) passes as is; anything else is cleaned and escaped (quotes too: safe in attributes)."""
    if hasattr(value, "__html__"):
        return value  # type: ignore[no-any-return]
    kind = type(value)
    if kind is _Cleaned:
        return Markup(escape_text(value))
    if kind is int or kind is float:  # counts and positions: nothing to clean or escape
        return Markup(value)
    return Markup(esc(value))


def _cut(value: Any, limit: int) -> tuple[_Cleaned, _Cleaned]:
    """(head, rest) of the cleaned text; rest is empty when it fits in `limit` characters."""
    text = clean(to_text(value))
    if len(text) <= limit:
        return _Cleaned(text), _Cleaned("")
    return _Cleaned(text[:limit]), _Cleaned(text[limit:])


class _CompactLoader(jinja2.PackageLoader):
    """Drops each template line's indentation and line break: they are for the reader. The report
    must be one line of markup (whitespace between tags would show inside pre-wrap text, and readers
    match a table row with a one-line pattern)."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        source, filename, uptodate = super().get_source(environment, template)
        return "".join(line.strip() for line in source.splitlines()), filename, uptodate


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=_CompactLoader("lmassert_magic.report", "templates"),
        autoescape=True,
        finalize=_shown,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    env.globals.update({name: Markup(style) for name, style in _STYLES.items()})
    env.globals.update(
        TEXT_LIMIT=TEXT_LIMIT, FAILURE_LIMIT=FAILURE_LIMIT, COMPILE=COMPILE, HARD_COLOR=Markup(HARD_COLOR),
        SOFT_COLOR=Markup(SOFT_COLOR), ALL_COLOR=Markup(ALL_COLOR), cut=_cut, rate_parts=rate_parts, number=number,
        calibration_note=calibration_note, counterexample_mode_text=counterexample_mode_text,
    )
    env.filters.update(grouped=lambda n: f"{n:,}", fixed=lambda x: f"{x:.1f}", short=short)
    return env


ENV = _environment()


def template_module(name: str) -> Any:
    """The macros of one template in the report's environment (cleaning and escaping every value)."""
    return ENV.get_template(name).module


__all__ = ["ALL_COLOR", "BASE_STYLE", "ENV", "HARD_COLOR", "SOFT_COLOR", "TEXT_LIMIT", "template_module"]
