"""Self-checking exercises for the notebooks: `check_exercise("quickstart.under_120")`.

A learner writes a constraint with `%%assert` (or changes one); the check reads the registry, runs
the learner's condition on a few outputs whose right verdict is known, and prints what holds and
what does not. The solutions in the notebooks call the same checks, so a test that runs the
notebooks proves every exercise can be passed, and the unit tests prove each one can be failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .definitions.specs import ConstraintEntry
from .definitions.store import Registry, get_registry
from .engine.constraints import ConstraintError

PASS, FAIL = "\N{CHECK MARK}", "\N{BALLOT X}"


@dataclass(frozen=True)
class Probe:
    """One output a right answer must accept or reject (all fields of the signature are given)."""

    fields: Mapping[str, Any]
    should_pass: bool
    why: str


@dataclass(frozen=True)
class Exercise:
    """Either a new soft constraint on `signature` that sorts the probes right, or `constraint` made hard."""

    key: str
    task: str
    signature: str
    existing: tuple[str, ...]  # the notebook's own constraints: a new one is any other name
    probes: tuple[Probe, ...] = ()
    make_hard: str | None = None
    feedback_must_mention: Callable[[Mapping[str, Any]], str] | None = None  # on the first failing probe


@dataclass
class ExerciseCheck:
    """What a check found: `passed`, and one line per point checked (printed by the notebook)."""

    key: str
    lines: list[str] = field(default_factory=list)
    passed: bool = True

    def note(self, ok: bool, text: str) -> None:
        self.lines.append(f"{PASS if ok else FAIL} {text}")
        self.passed = self.passed and ok

    def __str__(self) -> str:
        head = f"Exercise {self.key}: " + ("done." if self.passed else "not yet.")
        return "\n".join([head, *("  " + line for line in self.lines)])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _tweet(n_chars: int) -> str:
    base = "Harwick is where Mara Voss was born, and the town still tells her story to every visitor"
    return (base * (n_chars // len(base) + 1))[:n_chars]


def _distractors(*names: str) -> dict[str, str]:
    """The quiz signature's three output fields, `option_b` to `option_d` (option A is the answer)."""
    return dict(zip(("option_b", "option_c", "option_d"), names, strict=True))


_TWEET_FIELDS = {"question": "In which town was Mara Voss born?", "answer": "Harwick",
                 "context": ["Mara Voss was born in Harwick."]}
_ANSWER_FIELDS = {"question": "In which town was Mara Voss born?", "context": ["Mara Voss was born in Harwick."]}
_PARAGRAPH_FIELDS = {"question": "Where was Mara Voss born?",
                     "context": ["[1] Mara Voss was born in Harwick.", "[2] Harwick lies on the coast."]}
_QUIZ_FIELDS = {"question": "In which town was Mara Voss born?", "answer": "Harwick",
                "candidates": ["Dunmore", "Elst", "Tarrow", "Brisk", "Kestin"]}

_QUICKSTART = ("no_hashtags", "under_280", "has_answer", "engaging", "faithful", "grounded")
_MULTIHOP = ("short_query", "new_query")
_LONGFORM = ("citations", "faithful")
_QUIZ = ("distinct", "from_candidates")

EXERCISES: dict[str, Exercise] = {e.key: e for e in [
    Exercise(
        "quickstart.under_120",
        "a soft constraint that the tweet is under 120 characters, feedback saying how long it is",
        "GenerateTweet", _QUICKSTART,
        probes=(
            Probe({**_TWEET_FIELDS, "tweet": _tweet(100)}, True, "a 100-character tweet passes"),
            Probe({**_TWEET_FIELDS, "tweet": _tweet(119)}, True, "a 119-character tweet passes"),
            Probe({**_TWEET_FIELDS, "tweet": _tweet(130)}, False, "a 130-character tweet fails"),
        ),
        feedback_must_mention=lambda fields: str(len(fields["tweet"])),
    ),
    Exercise("quickstart.no_hashtags_hard", "no_hashtags made hard", "GenerateTweet", _QUICKSTART,
             make_hard="no_hashtags"),
    Exercise(
        "multihop.short_answer", "a soft constraint that the answer is at most 5 words", "GenerateAnswer", (),
        probes=(
            Probe({**_ANSWER_FIELDS, "answer": "Harwick"}, True, "a one-word answer passes"),
            Probe({**_ANSWER_FIELDS, "answer": "the old town of Harwick"}, True, "a five-word answer passes"),
            Probe({**_ANSWER_FIELDS, "answer": "she was born in the small coastal town of Harwick"}, False,
                  "a ten-word answer fails"),
        ),
    ),
    Exercise("multihop.new_query_hard", "new_query made hard", "GenerateSearchQuery", _MULTIHOP,
             make_hard="new_query"),
    Exercise(
        "longform.two_passages", "a soft constraint that the paragraph cites at least two different passages",
        "GenerateCitedParagraph", _LONGFORM,
        probes=(
            Probe({**_PARAGRAPH_FIELDS, "paragraph": "Mara Voss was born in Harwick [1]. It lies on the coast [2]."},
                  True, "citing [1] and [2] passes"),
            Probe({**_PARAGRAPH_FIELDS, "paragraph": "Mara Voss was born in Harwick [1]. She grew up there [1]."},
                  False, "citing [1] twice fails"),
            Probe({**_PARAGRAPH_FIELDS, "paragraph": "Mara Voss was born in Harwick."}, False, "citing nothing fails"),
        ),
    ),
    Exercise("longform.citations_hard", "citations made hard", "GenerateCitedParagraph", _LONGFORM,
             make_hard="citations"),
    Exercise("quiz.from_candidates_hard", "from_candidates made hard", "GenerateChoices", _QUIZ,
             make_hard="from_candidates"),
    Exercise(
        "quiz.not_from_question", "a soft constraint that no wrong option is copied from the question",
        "GenerateChoices", _QUIZ,
        probes=(
            Probe({**_QUIZ_FIELDS, **_distractors("Dunmore", "Elst", "Tarrow")}, True, "three other towns pass"),
            Probe({**_QUIZ_FIELDS, **_distractors("Elst", "Tarrow", "Mara Voss")}, False,
                  "an option naming the question's subject fails"),
        ),
    ),
]}


def check_exercise(key: str, report: Any = None, *, registry: Registry | None = None) -> ExerciseCheck:
    """Check exercise `key` against the registry (and, when given, the report of the compile that followed)."""
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; the exercises are: {', '.join(EXERCISES)}")
    exercise = EXERCISES[key]
    registry = registry if registry is not None else get_registry()
    check = ExerciseCheck(key)
    if exercise.make_hard:
        _check_made_hard(exercise, registry, check)
    else:
        _check_new_constraint(exercise, registry, check)
    if report is not None and check.passed:
        _check_report(exercise, registry, report, check)
    return check


def _check_made_hard(exercise: Exercise, registry: Registry, check: ExerciseCheck) -> None:
    entry = registry.constraints.get(exercise.make_hard)
    if entry is None:
        check.note(False, f"no constraint named {exercise.make_hard!r} is registered: run its %%assert cell first")
        return
    check.note(entry.spec.hard, f"{exercise.make_hard} is {'hard' if entry.spec.hard else 'still soft: add --hard'}")


def _new_constraints(exercise: Exercise, registry: Registry) -> list[ConstraintEntry]:
    return [e for name, e in registry.constraints.items()
            if e.spec.target == exercise.signature and name not in exercise.existing]


def _check_new_constraint(exercise: Exercise, registry: Registry, check: ExerciseCheck) -> None:
    candidates = _new_constraints(exercise, registry)
    if not candidates:
        check.note(False, f"no new constraint on {exercise.signature}: write one with "
                          f"%%assert {exercise.signature} --name NAME")
        return
    # The learner may have tried several: grade the last one written.
    entry = max(candidates, key=lambda e: e.version)
    name = entry.spec.name
    soft = not entry.spec.hard
    check.note(soft, f"{name} is soft" if soft else f"{name} is hard: the task asks for soft")
    for probe in exercise.probes:
        try:
            verdict = entry.constraint.check(probe.fields)
        except ConstraintError as exc:
            check.note(False, f"{probe.why}: your condition raised an error ({exc})")
            continue
        right = verdict == probe.should_pass
        said = "passes" if verdict else "fails"
        check.note(right, probe.why if right else f"{probe.why}, but yours {said}")
    if exercise.feedback_must_mention is not None:
        failing = next((p for p in exercise.probes if not p.should_pass), None)
        if failing is not None:
            wanted = exercise.feedback_must_mention(failing.fields)
            try:
                text = entry.constraint.feedback(failing.fields)
            except ConstraintError as exc:
                check.note(False, f"the feedback message raised an error ({exc})")
                return
            check.note(wanted in text, f"the feedback says {wanted!r}" if wanted in text
                       else f"the feedback should say {wanted!r}, it says {text!r}")


def _check_report(exercise: Exercise, registry: Registry, report: Any, check: ExerciseCheck) -> None:
    """The compile after the change must have used it: a report from before proves nothing."""
    result = getattr(report, "result", report)
    used = {c.name: c.hard for c in getattr(result, "constraints", [])}
    if exercise.make_hard:
        name, want_hard = exercise.make_hard, True
    else:
        name, want_hard = max(_new_constraints(exercise, registry), key=lambda e: e.version).spec.name, False
    if name not in used:
        check.note(False, f"the report's compile did not use {name}: recompile after defining it")
    else:
        check.note(used[name] == want_hard, f"the report's compile used {name} as {'hard' if used[name] else 'soft'}")
