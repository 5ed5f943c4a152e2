"""The transactional registry: signatures, constraints, compiled programs and judge calibrations.

No IPython here, so the same definitions can be built from plain Python. The registry keeps
*specs* (plain, comparable data: what the user wrote, `specs.py`) and the real DSPy objects built
from them (`signatures.py`, `expressions.py`); `planner.py` says what a change makes stale and
builds the program of a `%%compile` body; `snapshot.py` pictures the state.

Transactional: every change builds everything it needs on a copy of the state and swaps it in only
when nothing failed, so a failing cell leaves the registry exactly as it was.

`get_registry()` is a process-wide singleton that survives `%reload_ext` (and a reload of this
module), so definitions outlive a reload of the extension.
"""

from __future__ import annotations

import contextlib
import dataclasses
import keyword
import math
import threading
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import planner
from .expressions import build_constraint, condition_fields
from .planner import PipelinePlan
from .signatures import build_signature, validate_signature
from .snapshot import snapshot, snapshot_json
from .specs import (
    CONSTRAINT,
    PROGRAM,
    SIGNATURE,
    CompileRecord,
    ConstraintEntry,
    ConstraintSpec,
    Outcome,
    PipelineSpec,
    RegistryError,
    SignatureEntry,
    SignatureSpec,
    did_you_mean,
)

__all__ = ["Registry", "Transaction", "get_registry"]


@dataclass
class _State:
    signatures: dict[str, SignatureEntry] = field(default_factory=dict)
    constraints: dict[str, ConstraintEntry] = field(default_factory=dict)
    programs: dict[str, CompileRecord] = field(default_factory=dict)
    revision: int = 0
    versions: int = 0
    # constraint name -> (the constraint version it measured, CalibrationResult); a measurement, not a
    # definition: it is not in the snapshot, and a redefined constraint simply no longer matches it
    calibrations: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(dict(self.signatures), dict(self.constraints), dict(self.programs), self.revision,
                      self.versions, dict(self.calibrations))

    def kind_of(self, name: str) -> str | None:
        if name in self.signatures:
            return SIGNATURE
        if name in self.constraints:
            return CONSTRAINT
        if name in self.programs:
            return PROGRAM
        return None

    def next_version(self) -> int:
        self.versions += 1
        return self.versions

    def put(self, table: dict[str, Any], spec: Any, make: Callable[[int], Any]) -> tuple[Any, Outcome]:
        """Store `make(version)` under `spec.name` in `table` (signatures or constraints): the same meaning
        keeps the old version (so every dependent stays fresh), a new one gets the next. Returns (old, outcome)."""
        old = table.get(spec.name)
        unchanged = old is not None and old.spec.key() == spec.key()
        entry = make(old.version if unchanged else self.next_version())
        table[spec.name] = entry
        return old, Outcome(entry=entry, changed=not unchanged)


class Transaction:
    """Changes made on a copy of the registry state; committed only if the `with` block succeeds."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.changed = False

    def mark_stale(self, predicate: Callable[[CompileRecord], bool], reason: str) -> list[str]:
        """Mark matching compile records stale (`planner.mark_stale`); returns the notes the cell output shows."""
        notes = planner.mark_stale(self.state.programs, predicate, reason)
        if notes:
            self.changed = True
        return notes


class Registry:
    """Signatures, constraints and compiled programs of one kernel (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()

    # -- reading ---------------------------------------------------------------------------------
    @property
    def signatures(self) -> Mapping[str, SignatureEntry]:
        return types.MappingProxyType(self._state.signatures)

    @property
    def constraints(self) -> Mapping[str, ConstraintEntry]:
        return types.MappingProxyType(self._state.constraints)

    @property
    def programs(self) -> Mapping[str, CompileRecord]:
        return types.MappingProxyType(self._state.programs)

    @property
    def revision(self) -> int:
        """Bumped by every committed change; a failed change leaves it (and everything else) alone."""
        return self._state.revision

    def kind_of(self, name: str) -> str | None:
        """'signature', 'constraint', 'program' or None: names are unique across kinds."""
        return self._state.kind_of(name)

    def names(self, kind: str | None = None) -> list[str]:
        """Registered names (of one kind), sorted: for listings and closest-name hints."""
        state = self._state
        groups = {SIGNATURE: state.signatures, CONSTRAINT: state.constraints, PROGRAM: state.programs}
        if kind is not None:
            return sorted(groups[kind])
        return sorted(n for g in groups.values() for n in g)

    def calibration_of(self, name: str) -> Any:
        """The judge calibration measured for constraint `name` as it is defined now, or None."""
        entry = self._state.constraints.get(name)
        stored = self._state.calibrations.get(name)
        if entry is None or stored is None or stored[0] != entry.version:
            return None
        return stored[1]

    def record_calibration(self, name: str, result: Any) -> None:
        """Keep `result` (a CalibrationResult) for the current definition of constraint `name`."""
        with self.transaction() as tx:
            entry = tx.state.constraints.get(name)
            if entry is None:
                raise RegistryError(f"no constraint named {name!r}", 1)
            tx.state.calibrations[name] = (entry.version, result)
            tx.changed = True

    def constraints_on(self, signature: str) -> list[ConstraintEntry]:
        """The constraints %%compile attaches wherever `signature` is used."""
        return [e for _, e in sorted(self._state.constraints.items()) if e.spec.target == signature]

    def dependents_of(self, signature: str) -> list[str]:
        """Compiled programs that go stale when `signature` changes."""
        return sorted(n for n, r in self._state.programs.items() if r.uses_signature(signature))

    def snapshot(self) -> dict[str, Any]:
        """A deterministic, JSON-serialisable picture of everything registered (for tests and diffs)."""
        return snapshot(self._state)

    def snapshot_json(self) -> str:
        """`snapshot()` as canonical JSON text: equal strings mean equal registries."""
        return snapshot_json(self._state)

    # -- transactions ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """`with registry.transaction() as tx:` — all of the block's changes, or none of them."""
        with self._lock:
            tx = Transaction(self._state.copy())
            yield tx
            if tx.changed:
                tx.state.revision += 1
                self._state = tx.state

    def reset(self) -> None:
        """Forget everything (the revision counter keeps counting)."""
        with self._lock:
            revision = self._state.revision + 1
            self._state = _State(revision=revision)

    # -- signatures ------------------------------------------------------------------------------
    def define_signature(self, spec: SignatureSpec, namespace: Mapping[str, Any]) -> Outcome:
        """Add or replace a signature. A changed definition makes programs built from it stale."""
        validate_signature(spec)
        with self.transaction() as tx:
            state = tx.state
            other = state.kind_of(spec.name)
            if other not in (None, SIGNATURE):
                raise RegistryError(f"{spec.name!r} is already a registered {other}; choose another name", 1)
            cls = build_signature(spec, namespace)
            old, outcome = state.put(state.signatures, spec, lambda version: SignatureEntry(spec, cls, version))
            tx.changed = True
            if old is not None and outcome.changed:
                outcome.notes += tx.mark_stale(planner.uses_signature(spec.name),
                                               f"signature {spec.name} was redefined")
                outcome.notes += planner.fields_gone_notes(state.constraints, old.spec, spec)
            return outcome

    # -- constraints -----------------------------------------------------------------------------
    def next_constraint_name(self, target: str) -> str:
        """The default name of an unnamed constraint: `<target>_<n>` with the smallest free n."""
        n = 1
        while self._state.kind_of(f"{target}_{n}") is not None:
            n += 1
        return f"{target}_{n}"

    def find_unnamed(self, target: str, *, cell_id: str | None, condition: str, message: str | None) -> str | None:
        """The auto-named constraint a re-run cell defined before: same notebook cell, else same body."""
        for name, e in sorted(self._state.constraints.items()):
            if not e.spec.auto_name:
                continue
            if cell_id is not None and e.spec.cell_id == cell_id:
                return name
            if e.spec.target == target and e.spec.condition == condition and e.spec.message == message:
                return name
        return None

    def define_constraint(self, spec: ConstraintSpec, namespace: MutableMapping[str, Any], *,
                          replaces: str | None = None) -> Outcome:
        """Add or replace a constraint on a registered signature (names checked against `namespace`).

        `replaces` names a constraint the same cell defined before under another name; it goes away
        in the same transaction.
        """
        if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
            raise RegistryError(f"{spec.name!r} is not a valid constraint name (use letters, digits and _)", 1)
        if spec.max_backtracks is not None and spec.max_backtracks < 0:
            raise RegistryError("--backtracks must be 0 or more", 1)
        if spec.timeout is not None and not 0 < spec.timeout < math.inf:
            raise RegistryError(f"the timeout must be a positive number of seconds or None, got {spec.timeout}", 1)
        with self.transaction() as tx:
            state = tx.state
            sig = state.signatures.get(spec.target)
            if sig is None:
                raise RegistryError(
                    f"unknown signature {spec.target!r}" + did_you_mean(spec.target, state.signatures)
                    + (" (define it with %%signature first)" if not state.signatures else ""), 1)
            other = state.kind_of(spec.name)
            if other not in (None, CONSTRAINT):
                raise RegistryError(f"{spec.name!r} is already a registered {other}; choose another name", 1)
            constraint = build_constraint(spec, sig.spec, namespace)
            old, outcome = state.put(state.constraints, spec,
                                     lambda version: ConstraintEntry(spec, constraint, version))
            tx.changed = True
            gone = state.constraints.pop(replaces, None) if replaces and replaces != spec.name else None
            if gone is not None:
                outcome.notes.append(f"this cell defined {replaces} before; it is replaced by {spec.name}")
                outcome.notes += tx.mark_stale(planner.uses_signature(gone.spec.target),
                                               f"constraint {replaces} was replaced")
            if outcome.changed:
                targets = {spec.target} | ({old.spec.target} if old is not None else set())
                verb = "redefined" if old is not None else "added"
                for target in sorted(targets):
                    outcome.notes += tx.mark_stale(planner.uses_signature(target),
                                                   f"constraint {spec.name} on {target} was {verb}")
            used = set(condition_fields(spec, sig.spec))
            if not used & set(sig.spec.field_names()) - set(sig.spec.inputs):
                outcome.notes.append(
                    f"the condition reads no output field of {spec.target}, so retrying cannot change its result"
                )
            return outcome

    # -- removal ---------------------------------------------------------------------------------
    def remove(self, name: str) -> list[str]:
        """Remove a definition; a signature takes its constraints with it. Returns what happened."""
        with self.transaction() as tx:
            state = tx.state
            kind = state.kind_of(name)
            if kind is None:
                raise RegistryError(f"nothing is registered as {name!r}" + did_you_mean(name, self.names()))
            notes = [f"removed {kind} {name}"]
            if kind == SIGNATURE:
                del state.signatures[name]
                for cname in [n for n, e in state.constraints.items() if e.spec.target == name]:
                    del state.constraints[cname]
                    notes.append(f"removed constraint {cname} (it targeted {name})")
                notes += tx.mark_stale(planner.uses_signature(name), f"signature {name} was removed")
            elif kind == CONSTRAINT:
                target = state.constraints.pop(name).spec.target
                notes += tx.mark_stale(planner.uses_signature(target), f"constraint {name} was removed")
            else:
                del state.programs[name]
            tx.changed = True
            return notes

    # -- pipelines and compile results -------------------------------------------------------------
    def plan_pipeline(
        self,
        spec: PipelineSpec,
        namespace: MutableMapping[str, Any],
        *,
        example_inputs: Sequence[str] | None = None,
    ) -> PipelinePlan:
        """Build the program a `%%compile` body describes, with the constraints of the signatures it uses.

        Read-only: nothing is committed. Constraints on signatures the program doesn't use are skipped
        (listed in `plan.skipped`); see `planner.plan_pipeline`.
        """
        return planner.plan_pipeline(self._state, spec, namespace, example_inputs=example_inputs)

    def record_compile(
        self,
        plan: PipelinePlan,
        *,
        result: Any,
        program: Any,
        options: Mapping[str, Any],
        report: Any = None,
        interrupted: bool = False,
    ) -> Outcome:
        """Store a compile run; stale at once if a definition it used changed while it ran."""
        with self.transaction() as tx:
            state = tx.state
            other = state.kind_of(plan.spec.name)
            if other not in (None, PROGRAM):
                raise RegistryError(f"{plan.spec.name!r} is already a registered {other}; choose another name", 1)
            stale = planner.changed_while_compiling(state.signatures, plan.signature_versions)
            record = CompileRecord(
                name=plan.spec.name,
                pipeline=plan.spec,
                steps=plan.steps,
                options=tuple(sorted(options.items())),
                signatures=plan.signatures,
                signature_versions=tuple(sorted(plan.signature_versions.items())),
                constraints=plan.constraint_specs,
                constraint_versions=tuple(sorted(plan.constraint_versions.items())),
                skipped=tuple(plan.skipped),
                result=result,
                program=program,
                report=report,
                interrupted=interrupted,
                stale=stale,
            )
            state.programs[plan.spec.name] = record
            tx.changed = True
            return Outcome(entry=record)

    def rebind_program(self, name: str, program: Any, review: Any, *, result: Any = None) -> Outcome:
        """Replace NAME's program by `program` (the same one with demos chosen by hand, `review`) in one
        transaction. `result` is the compile the review was made on: a newer compile of NAME refuses it."""
        with self.transaction() as tx:
            record = tx.state.programs.get(name)
            if record is None:
                raise RegistryError(f"no compiled program named {name!r}" + did_you_mean(name, tx.state.programs))
            if result is not None and record.result is not result:
                raise RegistryError(f"{name} was compiled again since this report; review the demos in its new report")
            if record.program is None:
                raise RegistryError(f"{name} has no program to review (its compile was interrupted); re-run %%compile")
            tx.state.programs[name] = dataclasses.replace(record, program=program, review=review)
            tx.changed = True
            return Outcome(entry=tx.state.programs[name])


# ---------------------------------------------------------------- the singleton

_REGISTRY: Registry | None = globals().get("_REGISTRY")  # kept across importlib.reload of this module
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (survives `%reload_ext lmassert_magic`)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry()
        return _REGISTRY

