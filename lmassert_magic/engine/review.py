"""Demos chosen by hand: a compiled program's demos accepted or rejected one by one, and attempts from a
run's timeline pinned as demos of their step; the program rebuilt with the chosen demos.

Why in the engine: what a compile keeps as demos is the engine's decision; a review is a second,
human decision on the same demos, and must give a plain DSPy program (the registry rebinds it, export
saves it) and say exactly what was changed by hand. A `DemoReview` is plain data: the demos the
compile chose (`original`), the ids rejected and the demos pinned. Ids are `predictor:n` with n the
demo's number as the report shows it ("demo n"), and `predictor:pinN` for pinned ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import dspy
import pandas as pd

from .ablation import INFER_ASSERT, VANILLA, program_to_bind
from .compile import demos_of
from .defaults import MAX_BACKTRACKS
from .results import AblationResult
from .timeline import find_example, find_setting

#: Columns of `DemoReview.frame`.
COLUMNS = ("id", "predictor", "kind", "status", "source", "fields")


def demo_kind(demo: Mapping[str, Any]) -> str:
    """'counterexample' (it shows feedback and a fix), 'bootstrapped' (a teacher's trace) or 'labelled'."""
    if "feedback" in demo:
        return "counterexample"
    return "bootstrapped" if demo.get("augmented") else "labelled"


@dataclass(frozen=True)
class PinnedDemo:
    """An attempt of a run, pinned by hand as a demo of its step (`fields` as the demo will hold them)."""

    predictor: str
    fields: dict[str, Any]
    source: str  # where it came from, in words: "Infer w/ Assert, example #1, attempt #3 (retry 1)"


@dataclass(frozen=True)
class DemoReview:
    """The hand-made choices on one compiled program's demos (see the module docstring)."""

    original: dict[str, list[dict[str, Any]]]
    rejected: frozenset[str] = frozenset()
    pinned: tuple[PinnedDemo, ...] = ()

    @classmethod
    def of(cls, program: dspy.Module) -> DemoReview:
        """A review that changes nothing yet, of `program`'s demos as they are."""
        return cls(demos_of(program))

    # -- what there is to choose from ------------------------------------------------------------
    def items(self) -> list[tuple[str, str, str, dict[str, Any], str]]:
        """(id, predictor, kind, fields, source) of every demo: the compile's, then the pinned ones."""
        out = [(f"{name}:{i + 1}", name, demo_kind(demo), dict(demo), "compile")
               for name, demos in self.original.items() for i, demo in enumerate(demos)]
        for pin_id, pin in self._pins():
            out.append((pin_id, pin.predictor, "pinned", dict(pin.fields), pin.source))
        return out

    def _pins(self) -> list[tuple[str, PinnedDemo]]:
        counts: dict[str, int] = {}
        out = []
        for pin in self.pinned:
            counts[pin.predictor] = counts.get(pin.predictor, 0) + 1
            out.append((f"{pin.predictor}:pin{counts[pin.predictor]}", pin))
        return out

    def status(self, demo_id: str) -> str:
        if demo_id in self.rejected:
            return "rejected"
        return "pinned" if ":pin" in demo_id else "accepted"

    @property
    def changed(self) -> bool:
        return bool(self.rejected or self.pinned)

    # -- changing it -------------------------------------------------------------------------------
    def updated(self, *, reject: Iterable[str] = (), accept: Iterable[str] = (), pin: Iterable[PinnedDemo] = (),
                reset: bool = False, program: str = "the program") -> DemoReview:
        """A new review with these changes; rejecting a pinned demo unpins it. Unknown ids raise ValueError."""
        if reset:
            return DemoReview(self.original)
        known = [i for i, *_ in self.items()]
        reject, accept = list(reject), list(accept)
        for demo_id in [*reject, *accept]:
            if demo_id not in known:
                raise ValueError(f"no demo {demo_id} in {program}; its demos: {', '.join(known) or 'none'}")
        unpin = {demo_id for demo_id in reject if ":pin" in demo_id}
        pins = tuple(p for i, p in self._pins() if i not in unpin) + tuple(pin)
        rejected = (self.rejected | {i for i in reject if ":pin" not in i}) - set(accept)
        return replace(self, rejected=frozenset(rejected), pinned=pins)

    # -- what it gives ---------------------------------------------------------------------------
    def demos(self) -> dict[str, list[dict[str, Any]]]:
        """The chosen demos per predictor: the compile's that were not rejected, in order, then the pinned ones."""
        out: dict[str, list[dict[str, Any]]] = {}
        for demo_id, predictor, _, fields, _ in self.items():
            out.setdefault(predictor, [])
            if demo_id not in self.rejected:
                out[predictor].append(fields)
        return out

    def frame(self) -> pd.DataFrame:
        """One row per demo: id, predictor, kind, status (accepted, rejected, pinned), source and fields."""
        rows = [{"id": i, "predictor": p, "kind": k, "status": self.status(i), "source": s, "fields": f}
                for i, p, k, f, s in self.items()]
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def lines(self) -> list[str]:
        """What `%lmassert show` says about the demos."""
        if not self.changed:
            return ["demos: as compiled (none changed by hand)"]
        kinds = {i: k for i, _, k, _, _ in self.items()}
        parts = []
        if self.rejected:
            parts.append("rejected " + ", ".join(f"{i} ({kinds.get(i, '?')})" for i in sorted(self.rejected)))
        parts += [f"pinned {i} from {pin.source}" for i, pin in self._pins()]
        return ["demos changed by hand: " + "; ".join(parts)]

    def summary(self) -> str:
        """'2 demos (1 rejected by hand, 1 pinned)'."""
        n = sum(len(d) for d in self.demos().values())
        notes = [f"{len(self.rejected)} rejected by hand"] if self.rejected else []
        notes += [f"{len(self.pinned)} pinned"] if self.pinned else []
        return f"{n} demo{'s' if n != 1 else ''}" + (f" ({', '.join(notes)})" if notes else "")


def pin_attempt(result: AblationResult, example: Any, seq: int, setting: str | None = None) -> PinnedDemo:
    """Attempt `seq` of `example` in `setting` as a demo of its step: its inputs and outputs, and for a retry
    the feedback it was sent and its step's previous output (like a counterexample demo)."""
    res = find_setting(result, setting)
    ex = find_example(res, example)
    attempts = ex.record.attempts if ex.record is not None else []
    attempt = next((a for a in attempts if a.seq == seq), None)
    if attempt is None:
        raise ValueError(f"example {ex.index} of {res.label} has no attempt {seq} (its attempts: "
                         f"{', '.join(str(a.seq) for a in attempts) or 'none'})")
    if attempt.error or not attempt.outputs:
        raise ValueError(f"attempt {seq} of example {ex.index} failed ({attempt.error}); it has no output to pin")
    fields = {**attempt.inputs, **attempt.outputs, "augmented": True}
    previous = [a for a in attempts if a.step == attempt.step and a.seq < seq]
    if attempt.feedback and previous:
        fields["feedback"] = "\n".join(attempt.feedback)
        fields.update({f"past_{k}": v for k, v in previous[-1].outputs.items()})
    label = {"first": "first try", "retry": f"retry {attempt.attempt}", "rerun": f"rerun {attempt.attempt}"}
    source = f"{res.label}, example #{ex.index}, attempt #{seq} ({label.get(attempt.reason, attempt.reason)})"
    return PinnedDemo(attempt.step, fields, source)


def program_of(result: AblationResult) -> dspy.Module:
    """The program a compile of `result` hands back (`ablation.program_to_bind`), for a result reviewed
    without the registry (plain Python); the run's own configuration is reused."""
    base = next((result.programs[k] for k in (VANILLA, INFER_ASSERT) if k in result.programs), None)
    base = base if base is not None else next(iter(result.programs.values()), None)
    if base is None:
        raise ValueError("this result holds no program: pass the compiled one, CompileReport(result, program=...)")
    config = result.config or {}
    options = {k: config[k] for k in ("budget", "retry_temperature") if k in config}
    program = program_to_bind(result, base, result.constraints, config.get("max_backtracks", MAX_BACKTRACKS),
                              seed=result.seed, **options)
    if program is None:
        raise ValueError("no setting ran, so there is no program to review")
    return program


def with_demos(program: dspy.Module, demos: Mapping[str, list[dict[str, Any]]]) -> dspy.Module:
    """A copy of `program` (activation and constraints kept) whose predictors hold exactly `demos`."""
    predictors = dict(program.named_predictors())
    unknown = sorted(set(demos) - set(predictors))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not a predictor of the program (its predictors: "
                         f"{', '.join(predictors) or 'none'})")
    copy = program.deepcopy()
    for name, predictor in copy.named_predictors():
        inputs = list(predictor.signature.input_fields)
        predictor.demos = [dspy.Example(**d).with_inputs(*[k for k in inputs if k in d])
                           for d in demos.get(name, [])]
    return copy


__all__ = ["COLUMNS", "DemoReview", "PinnedDemo", "demo_kind", "pin_attempt", "program_of", "with_demos"]
