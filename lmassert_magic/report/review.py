"""A report's demo review: the choices made by hand, the program rebuilt with them, and the static view.

Why in the report: the review is made where the demos are read (the widget's Demos tab, the
Timeline tab's pin, `report.review(...)`); the engine rebuilds the program (`engine.review`), and
whoever made the report decides what a change also rebinds: `%%compile` passes `on_review`, which
rebinds the registry's program and the notebook variable in one transaction. The static HTML shows
the choices read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dspy

from ..engine.ablation import AblationResult
from ..engine.review import DemoReview, PinnedDemo, pin_attempt, program_of, with_demos
from .environment import template_module
from .model import hiding_secrets

#: on_review(program, review) -> lines saying what was rebound; raises (changing nothing) when it cannot.
ReviewHandler = Callable[[dspy.Module, DemoReview], Sequence[str]]
#: What `pin=` takes: (example, attempt seq), (example, attempt seq, setting) or a PinnedDemo.
PinSpec = Any


class Reviewer:
    """The review of one report's compiled program: the program as compiled, the choices so far, and
    `on_review`, told of every change before it counts."""

    def __init__(self, result: AblationResult, program: dspy.Module | None = None,
                 on_review: ReviewHandler | None = None, name: str = "the program") -> None:
        self.result = result
        self.name = name
        self.on_review = on_review
        self._compiled = program
        self._review: DemoReview | None = None
        self._program: dspy.Module | None = program
        self.notes: list[str] = []

    def compiled(self) -> dspy.Module:
        """The program as the compile bound it (every review starts from its demos)."""
        if self._compiled is None:
            self._compiled = self._program = program_of(self.result)
        return self._compiled

    @property
    def available(self) -> bool:
        """Whether there is a program to review (a hand-built result may hold none; an interrupted compile
        bound none)."""
        if self._compiled is None and self.result.interrupted:
            return False
        try:
            self.compiled()
        except ValueError:
            return False
        return True

    @property
    def review(self) -> DemoReview:
        if self._review is None:
            self._review = DemoReview.of(self.compiled())
        return self._review

    @property
    def changes(self) -> DemoReview | None:
        """The review once it changed something (None before: nothing to show)."""
        return self._review if self._review is not None and self._review.changed else None

    @property
    def program(self) -> dspy.Module:
        """The program with the demos chosen so far."""
        self.compiled()
        assert self._program is not None
        return self._program

    def apply(self, *, reject: Iterable[str] = (), accept: Iterable[str] = (), pin: Iterable[PinSpec] = (),
              reset: bool = False) -> dspy.Module:
        """Change the choices and rebuild the program; nothing changes if any part fails (bad id, bad pin,
        a registry that refuses)."""
        pins = [p if isinstance(p, PinnedDemo) else self._pin(p) for p in pin]
        review = self.review.updated(reject=reject, accept=accept, pin=pins, reset=reset, program=self.name)
        program = with_demos(self.compiled(), review.demos())
        notes = (list(self.on_review(program, review)) if self.on_review is not None
                 else [f"{self.name} rebuilt: {review.summary()}"])
        self._review, self._program, self.notes = review, program, notes
        return program

    def _pin(self, spec: PinSpec) -> PinnedDemo:
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ValueError(f"a pin is (example, attempt) or (example, attempt, setting), got {spec!r}")
        example, seq, *setting = spec
        return pin_attempt(self.result, example, int(seq), setting[0] if setting else None)


@hiding_secrets
def review_html(review: DemoReview) -> str:
    """The choices made by hand, read-only (the static report's Demos section shows it once a review changed
    something)."""
    items = [(i, kind, review.status(i), source, values) for i, _, kind, values, source in review.items()]
    return str(_REVIEW.review(review.summary(), items))


@hiding_secrets
def review_item_html(review: DemoReview, demo_id: str) -> str:
    """One demo's card (the widget puts its accept/reject control beside it)."""
    for i, _, kind, values, source in review.items():
        if i == demo_id:
            return str(_REVIEW.item(i, kind, review.status(i), source, values))
    raise KeyError(demo_id)


@hiding_secrets
def review_head_html(name: str, review: DemoReview) -> str:
    return str(_REVIEW.panel_head(name, review.summary()))


_REVIEW = template_module("review.html")

__all__ = ["PinSpec", "ReviewHandler", "Reviewer", "review_head_html", "review_html", "review_item_html"]
