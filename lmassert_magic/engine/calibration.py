"""Calibrate an LM judge against labelled items before trusting its pass rate (pure Python, no IPython).

Why: an LM judge is a measuring instrument. On the embedded 135M model a yes/no judge says "yes" to most
things whatever it is shown, so its pass rate says nothing about the outputs. A report shows each judge's
agreement with labelled items (Wilson interval), Cohen's kappa and how often it said yes next to the pass
rate it produced, and flags a judge that is at chance.

Results are cached on disk as JSON (a calibration costs one LM call per item), keyed by the judge's name,
the model id, a hash of the judge's prompt and a hash of the labelled items. The key does not include the
judge's code: pass the judge's question as `prompt` and the model id as `model` so that changing either
recalibrates, or pass ``refresh=True``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .stats import Rate, agreement

__all__ = [
    "KAPPA_AT_CHANCE",
    "CalibrationResult",
    "calibrate_judge",
    "default_cache_dir",
    "prompt_hash",
]

#: Below this kappa a judge is called at chance ("slight" agreement on the Landis & Koch scale).
KAPPA_AT_CHANCE = 0.2
CACHE_VERSION = 1
_MAX_ERROR_MESSAGES = 3


def default_cache_dir() -> Path:
    """Where calibrations are cached: ``$LMASSERT_CACHE_DIR/calibration`` if that variable is set, else
    ``~/.cache/lmassert_magic/calibration`` (``$XDG_CACHE_HOME`` replaces ``~/.cache`` when set)."""
    root = os.environ.get("LMASSERT_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "calibration"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lmassert_magic" / "calibration"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(prompt: str) -> str:
    """Short hash of a judge's prompt: part of the cache key, shown so two calibrations can be told apart."""
    return _sha(prompt)[:12]


def _labels_hash(items: Sequence[tuple[Mapping[str, Any], bool]]) -> str:
    canonical = json.dumps(
        [[dict(fields_), bool(label)] for fields_, label in items], sort_keys=True, default=repr, ensure_ascii=False
    )
    return _sha(canonical)[:16]


@dataclass(frozen=True)
class CalibrationResult:
    """How one judge agrees with labelled items on one model, and whether to trust it.

    `at_chance` is True when any of: kappa is undefined or below KAPPA_AT_CHANCE (0.2); or the Wilson
    interval on agreement holds the majority-class rate, i.e. answering the more common label every time
    cannot be ruled out as doing as well; or no item was scored.
    """

    name: str
    n: int  # items scored (labelled items minus errors)
    items: int  # labelled items given
    errors: int  # items where the judge raised or returned something other than True/False
    agreement: Rate
    kappa: float
    kappa_low: float
    kappa_high: float
    yes_rate: float  # share of scored items the judge answered True
    label_yes_rate: float
    majority_rate: float
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int
    model: str
    prompt_hash: str
    labels_hash: str
    date: str  # ISO 8601, UTC, when the judge was run
    at_chance: bool
    error_messages: tuple[str, ...] = ()
    predictions: tuple[bool | None, ...] = field(default=(), repr=False)  # per item, None = error
    from_cache: bool = field(default=False, compare=False)

    def describe(self) -> str:
        """One sentence, generated from the numbers, for a report or a notebook."""
        on = f"on {self.model}" if self.model else "on this model"
        if self.n == 0:
            text = f"judge {self.name!r} could not be measured {on}: no labelled item was scored"
        else:
            kappa = "kappa undefined" if math.isnan(self.kappa) else f"kappa {_fixed(self.kappa)}"
            verdict = f"at chance {on}" if self.at_chance else f"better than chance {on}"
            text = (
                f"judge {self.name!r} agrees with {self.n} labelled items {_percent(self.agreement.rate)} of the "
                f"time ({round(self.agreement.confidence * 100)}% CI {_percent(self.agreement.ci_low, False)}-"
                f"{_percent(self.agreement.ci_high)}), {kappa}: {verdict}; it answered yes to "
                f"{_percent(self.yes_rate)} of them"
            )
        if self.errors:
            text += f" ({self.errors} of {self.items} items raised errors and are not counted)"
        return text + "."

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("from_cache")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, from_cache: bool = False) -> CalibrationResult:
        known = {f.name for f in fields(cls)} - {"from_cache"}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["agreement"] = Rate(**kwargs["agreement"])
        kwargs["error_messages"] = tuple(kwargs.get("error_messages", ()))
        kwargs["predictions"] = tuple(kwargs.get("predictions", ()))
        return cls(**kwargs, from_cache=from_cache)


def _percent(x: float, sign: bool = True) -> str:
    return "n/a" if not math.isfinite(x) else f"{round(x * 100):d}" + ("%" if sign else "")


def _fixed(x: float) -> str:
    r = round(x, 2)
    return f"{0.0 if r == 0 else r:.2f}"


def _is_at_chance(kappa: float, agreement_rate: Rate, majority_rate: float) -> bool:
    if agreement_rate.n == 0 or math.isnan(kappa) or kappa < KAPPA_AT_CHANCE:
        return True
    return agreement_rate.holds(majority_rate)


def _as_label(value: Any, index: int) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"labelled item {index}: the label must be True/False, got {type(value).__name__} {value!r:.40}")


def _caller(judge: Callable[..., Any]) -> Callable[[Mapping[str, Any]], Any]:
    """Call a plain judge with the fields it names (all of them if it takes **kwargs)."""
    try:
        params = list(inspect.signature(judge).parameters.values())
    except (TypeError, ValueError):
        return lambda f: judge(**f)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return lambda f: judge(**f)
    names = {
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return lambda f: judge(**{k: v for k, v in f.items() if k in names})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "judge"


def calibrate_judge(
    judge: Callable[..., bool] | Any,
    labelled: Sequence[tuple[Mapping[str, Any], bool]],
    *,
    name: str | None = None,
    model: str = "",
    prompt: str = "",
    cache_dir: Path | str | None = None,
    refresh: bool = False,
) -> CalibrationResult:
    """Run `judge` on every labelled item and measure how it agrees with the labels.

    `judge` is a callable taking an item's fields as keyword arguments (only those it names, or all with
    **kwargs) and returning True/False, or a :class:`~lmassert_magic.engine.constraints.Constraint`
    (its ``check``; `name` then defaults to the constraint's name). An item on which the judge raises, or
    returns anything but True/False, is an error: counted separately and left out of agreement.

    A cached result for the same (name, model, prompt hash, labelled items) is returned without calling
    the judge (``from_cache=True``); ``refresh=True`` recalibrates. The cache lives under `cache_dir`
    (default :func:`default_cache_dir`).
    """
    from .constraints import Constraint  # imported here: it brings in DSPy, which plain judges don't need

    if isinstance(judge, Constraint):
        constraint = judge
        name = name or constraint.name
        run: Callable[[Mapping[str, Any]], Any] = constraint.check
    elif callable(judge):
        if not name:
            raise ValueError("calibrate_judge needs name= for a plain callable (it keys the cache)")
        run = _caller(judge)
    else:
        raise TypeError(f"judge must be a callable or a Constraint, got {type(judge).__name__}")

    items: list[tuple[Mapping[str, Any], bool]] = []
    for i, item in enumerate(labelled):
        try:
            item_fields, label = item
        except (TypeError, ValueError) as exc:
            raise TypeError(f"labelled item {i} must be a (fields, label) pair") from exc
        if not isinstance(item_fields, Mapping):
            raise TypeError(f"labelled item {i}: fields must be a dict, got {type(item_fields).__name__}")
        items.append((item_fields, _as_label(label, i)))

    p_hash, l_hash = prompt_hash(prompt), _labels_hash(items)
    key = _sha(json.dumps([CACHE_VERSION, name, model, p_hash, l_hash]))
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"{_slug(name)}-{key[:16]}.json"

    if not refresh:
        cached = _load(path, key)
        if cached is not None:
            return cached

    predictions: list[bool | None] = []
    messages: list[str] = []
    for item_fields, _ in items:
        try:
            value = run(dict(item_fields))
        except Exception as exc:  # the judge's failure on one item: an error item, not a crash
            predictions.append(None)
            messages.append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        if isinstance(value, (bool, np.bool_)):
            predictions.append(bool(value))
        else:
            predictions.append(None)
            messages.append(f"returned {type(value).__name__} {value!r:.60}, expected True or False")

    scored = [(label, pred) for (_, label), pred in zip(items, predictions) if pred is not None]
    agr = agreement([s[0] for s in scored], [s[1] for s in scored])
    result = CalibrationResult(
        name=name,
        n=agr.n,
        items=len(items),
        errors=len(items) - agr.n,
        agreement=agr.agreement,
        kappa=agr.kappa,
        kappa_low=agr.kappa_low,
        kappa_high=agr.kappa_high,
        yes_rate=agr.yes_rate,
        label_yes_rate=agr.label_yes_rate,
        majority_rate=agr.majority_rate,
        true_pos=agr.true_pos,
        false_pos=agr.false_pos,
        false_neg=agr.false_neg,
        true_neg=agr.true_neg,
        model=model,
        prompt_hash=p_hash,
        labels_hash=l_hash,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        at_chance=_is_at_chance(agr.kappa, agr.agreement, agr.majority_rate),
        error_messages=tuple(messages[:_MAX_ERROR_MESSAGES]),
        predictions=tuple(predictions),
    )
    _store(path, key, result)
    return result


def _load(path: Path, key: str) -> CalibrationResult | None:
    """A cached result, or None when there is none, it is unreadable, or it belongs to another key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key or data.get("version") != CACHE_VERSION:
            return None
        return CalibrationResult.from_json(data["result"], from_cache=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(path: Path, key: str, result: CalibrationResult) -> None:
    """Write atomically (a reader never sees half a file); a cache that cannot be written is only a warning."""
    payload = {"version": CACHE_VERSION, "key": key, "date": result.date, "n": result.n, "result": result.to_json()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not cache the calibration of {result.name!r} in {path.parent}: {exc}", stacklevel=3)
