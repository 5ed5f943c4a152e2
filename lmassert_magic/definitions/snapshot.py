"""A deterministic, JSON-able picture of the registry state, for tests and for comparing states.

Specs and compile records become plain data (NaN and infinities become None, anything else that
is not plain data its repr); `snapshot_json` is the canonical text: equal strings, equal registries.
Calibrations are measurements, not definitions, and are not part of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, Protocol

from .specs import CompileRecord, ConstraintEntry, SignatureEntry

__all__ = ["plain", "snapshot", "snapshot_json"]


class Definitions(Protocol):
    """What a snapshot reads of the registry state (see `store._State`)."""

    signatures: dict[str, SignatureEntry]
    constraints: dict[str, ConstraintEntry]
    programs: dict[str, CompileRecord]
    revision: int
    versions: int


def plain(value: Any) -> Any:
    """`value` as JSON-able data: mappings, sequences and dataclasses recursively, floats finite or None."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def _record_dict(record: CompileRecord) -> dict[str, Any]:
    result = record.result
    settings = {}
    for key, res in getattr(result, "settings", {}).items():
        settings[key] = {"examples": res.n, "failed": res.n_failed, "metric": plain(res.metric)}
    return {
        "pipeline": plain(record.pipeline),
        "steps": plain(record.steps),
        "options": plain(dict(record.options)),
        "signature_versions": plain(dict(record.signature_versions)),
        "constraint_versions": plain(dict(record.constraint_versions)),
        "skipped": list(record.skipped),
        "interrupted": record.interrupted,
        "stale": record.stale,
        "program": None if record.program is None else type(record.program).__name__,
        "review": None if record.review is None else plain(record.review),
        "results": settings,
    }


def snapshot(state: Definitions) -> dict[str, Any]:
    """Everything registered in `state`, sorted by name, as plain data."""
    return {
        "revision": state.revision,
        "versions": state.versions,
        "signatures": {n: {"version": e.version, **plain(e.spec)} for n, e in sorted(state.signatures.items())},
        "constraints": {n: {"version": e.version, **plain(e.spec)} for n, e in sorted(state.constraints.items())},
        "programs": {n: _record_dict(r) for n, r in sorted(state.programs.items())},
    }


def snapshot_json(state: Definitions) -> str:
    """`snapshot(state)` as canonical JSON text."""
    return json.dumps(snapshot(state), sort_keys=True, separators=(",", ":"), default=repr)
