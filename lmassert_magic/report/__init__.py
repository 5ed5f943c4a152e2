"""The report shown after `%%compile`: one object that displays everywhere.

`CompileReport(result)` gives IPython text/plain and static text/html (nbconvert, GitHub, a
terminal) and, when a kernel with a widget frontend is there, the ipywidgets view too. The
tables stay reachable as pandas DataFrames in `report.tables`.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..engine.ablation import AblationResult
from . import html as _html
from .progress import progress_reporter

if TYPE_CHECKING:
    from .widgets import ReportWidget

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def widget_frontend_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets importable (a terminal IPython has no frontend).

    `LMASSERT_WIDGETS=0` forces the static view (e.g. for a headless run whose output is exported).
    """
    if os.environ.get("LMASSERT_WIDGETS", "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or getattr(shell, "kernel", None) is None:
            return False
        import ipywidgets  # noqa: F401
    except Exception:
        return False
    return True


def _hidden(frame: pd.DataFrame) -> pd.DataFrame:
    for column in frame.columns:
        if not (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column])):
            frame[column] = frame[column].map(_html.hide_secrets_in)  # text, lists and dicts of text
    return frame


class CompileReport:
    """A displayable view of an `AblationResult` (the five-setting ablation of `%%compile`).

    `widgets=None` decides automatically whether to add the widget view to the display bundle;
    True/False forces it. `row_limit` caps rows per group in the static HTML (the widget pages).
    """

    def __init__(self, result: AblationResult, *, widgets: bool | None = None,
                 row_limit: int = _html.ROW_LIMIT) -> None:
        self.result = result
        self.widgets = widgets
        self.row_limit = row_limit
        self._widget: ReportWidget | None = None

    # -- static views ---------------------------------------------------------------------
    def text(self) -> str:
        """The plain-text report (what a terminal shows)."""
        return _html.render_text(self.result)

    def html(self) -> str:
        """The static HTML report: no script, inline SVG chart, every LM string escaped."""
        return _html.render_html(self.result, self.row_limit)

    @property
    def headlines(self) -> list[str]:
        """Sentences to read aloud, e.g. 'no_hashtags: 21% -> 96% ..., +1.4 LM calls per example'."""
        return _html.summary_lines(self.result)

    @property
    def interrupted(self) -> bool:
        """True when the run was stopped and this is a partial result."""
        return self.result.interrupted

    # -- tables ---------------------------------------------------------------------------
    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """summary, pass_rates, demos, counterexamples, examples and failures as DataFrames."""
        with _html.secrets_hidden():  # LM text and errors may carry an API key: blank it in every cell
            examples = _hidden(self.result.examples_frame())
            failures = (
                examples.loc[~examples["ok"], ["setting", "index", "error"]].reset_index(drop=True)
                if len(examples) else pd.DataFrame(columns=["setting", "index", "error"])
            )
            return {
                "summary": self.result.summary(),
                "pass_rates": self.result.pass_rates(),
                "demos": _hidden(self.result.demos_frame()),
                "counterexamples": _hidden(self.result.counterexamples_frame()),
                "examples": examples,
                "failures": failures,
            }

    def summary(self) -> pd.DataFrame:
        """One row per setting: metric, pass rates, LM calls and tokens per example, seconds."""
        return self.tables["summary"]

    def pass_rates(self) -> pd.DataFrame:
        """Setting x constraint with the counts behind each rate."""
        return self.tables["pass_rates"]

    def demos(self) -> pd.DataFrame:
        """Every bootstrapped demo (also those the HTML view cut)."""
        return self.tables["demos"]

    def counterexamples(self) -> pd.DataFrame:
        """Every counterexample (also those the HTML view cut)."""
        return self.tables["counterexamples"]

    # -- widget ---------------------------------------------------------------------------
    def widget(self) -> ReportWidget:
        """The ipywidgets UI (built once, then reused so every display shares one model)."""
        if self._widget is None:
            from .widgets import build_widget

            self._widget = build_widget(self.result)
        return self._widget

    def _want_widget(self) -> bool:
        return widget_frontend_available() if self.widgets is None else self.widgets

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": self.text(), "text/html": self.html()}
        if self._want_widget():
            try:
                view = self.widget()._repr_mimebundle_()
            except Exception:  # a broken widget stack must not hide the report
                view = None
            if view and WIDGET_MIME in view:
                bundle[WIDGET_MIME] = view[WIDGET_MIME]
        return bundle

    def __repr__(self) -> str:
        return self.text()


__all__ = ["CompileReport", "WIDGET_MIME", "progress_reporter", "widget_frontend_available"]
