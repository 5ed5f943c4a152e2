"""The Demos tab's review panel: an accept/reject control beside each demo of the compiled program.

Why at once and not behind an "apply" button: every change is one registry transaction that rebinds
the program and the notebook variable, so what the panel shows is always what the variable holds. A
change the registry refuses is undone in the panel and said in its status line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as W

from .review import review_head_html, review_item_html
from .static_html import text_html

if TYPE_CHECKING:
    from . import CompileReport

CHOICES = ("accept", "reject")


class ReviewPanel(W.VBox):
    """The compiled program's demos, each with accept/reject; `toggles` maps demo ids to their controls."""

    def __init__(self, report: CompileReport, name: str = "the program") -> None:
        self.report = report
        self.name = name
        self.head = W.HTML()
        self.items = W.VBox()
        self.status = W.HTML()
        self.toggles: dict[str, W.ToggleButtons] = {}
        self._undoing = False
        super().__init__([self.head, self.items, self.status])
        self.add_class("lmassert-review-panel")
        self.refresh()

    def refresh(self) -> None:
        """Show the report's review (after any change, wherever it was made): the same demos are updated in
        place (no flicker, the focus stays), a demo pinned or unpinned rebuilds the list."""
        review = self.report.reviewer.review
        self.head.value = review_head_html(self.name, review)
        ids = [demo_id for demo_id, *_ in review.items()]
        if ids == list(self.toggles):
            self._undoing = True  # values set here are not choices
            try:
                for demo_id, row in zip(ids, self.items.children):
                    self.toggles[demo_id].value = "reject" if demo_id in review.rejected else "accept"
                    row.children[1].value = review_item_html(review, demo_id)
            finally:
                self._undoing = False
            return
        rows, self.toggles = [], {}
        for demo_id, *_ in review.items():
            toggle = W.ToggleButtons(options=list(CHOICES), value="reject" if demo_id in review.rejected else "accept",
                                     style={"button_width": "64px"}, layout=W.Layout(width="150px"))
            toggle.observe(self._changed, names="value")
            toggle.demo_id = demo_id
            self.toggles[demo_id] = toggle
            rows.append(W.HBox([toggle, W.HTML(review_item_html(review, demo_id))]))
        self.items.children = rows

    def _changed(self, change: dict[str, Any]) -> None:
        if self._undoing:
            return
        toggle = change["owner"]
        try:
            if change["new"] == "reject":
                self.report.review(reject=[toggle.demo_id])
            else:
                self.report.review(accept=[toggle.demo_id])
            message = "; ".join(self.report.reviewer.notes)
        except Exception as exc:  # refused (e.g. a newer compile): the panel goes back to what is bound
            self._undoing = True
            try:
                toggle.value = change["old"]
            finally:
                self._undoing = False
            message = f"not changed: {exc}"
        self.status.value = text_html(message)


__all__ = ["CHOICES", "ReviewPanel"]
