"""Call targets: which predictors a constraint's target names.

A target is a predictor, a module (its predictors), a list of those, a Signature class (predictors
with an equal one), a name (a predictor's attribute path or its prefix, its origin, its signature's
name) or None (the only predictor, or the last one called).
"""

from __future__ import annotations

from typing import Any

import dspy

from .errors import TargetNotFoundError


def predictor_label(predictor: Any) -> str:
    sig = getattr(predictor, "signature", None)
    return f"{type(predictor).__name__}({getattr(sig, '__name__', 'signature')})"


def _signature_matches(candidate: Any, target: type[dspy.Signature]) -> bool:
    if candidate is None:
        return False
    if candidate is target:
        return True
    try:
        same_instructions = (candidate.instructions or "").strip() == (target.instructions or "").strip()
        fields_in = set(target.input_fields) <= set(candidate.input_fields)
        fields_out = set(target.output_fields) <= set(candidate.output_fields)
    except AttributeError:
        return False
    return same_instructions and fields_in and fields_out


def _is_signature_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, dspy.Signature)


def matches_target(predictor: Any, name: str, target: Any) -> bool:
    if target is predictor or (target is not None and getattr(predictor, "_lmassert_wraps", None) is target):
        return True  # the predictor, or the one a DSPy 2.5 `Retry` wraps
    if isinstance(target, (list, tuple)):  # DSPy 2.5 programs pass lists (`target_module=self.generate_query`)
        return any(matches_target(predictor, name, t) for t in target)
    if isinstance(target, dspy.Module) and not isinstance(target, dspy.Predict):
        return any(p is predictor for p in target.predictors())
    if _is_signature_class(target):
        return any(_signature_matches(sig, target) for sig in _signatures(predictor))
    if isinstance(target, str):
        return (
            name == target
            or name.startswith(target + ".")
            or getattr(predictor, "_lmassert_origin", None) == target
            or any(getattr(sig, "__name__", None) == target for sig in _signatures(predictor))
        )
    return False


#: Set on a predictor whose instructions an optimizer rewrote (GEPA): the signature it had before, so
#: constraints naming that signature still find it.
FIRST_SIGNATURE_ATTR = "_lmassert_first_signature"


def _signatures(predictor: Any) -> list[Any]:
    found = [getattr(predictor, "signature", None), getattr(predictor, FIRST_SIGNATURE_ATTR, None)]
    return [sig for sig in found if sig is not None]


def describe_target(target: Any) -> str:
    if isinstance(target, (list, tuple)):
        return "[" + ", ".join(describe_target(t) for t in target) + "]"
    if _is_signature_class(target):
        return f"signature {target.__name__}"
    if isinstance(target, str):
        return repr(target)
    return predictor_label(target) if isinstance(target, dspy.Predict) else type(target).__name__


def resolve_target(program: dspy.Module, target: Any) -> list[tuple[str, dspy.Predict]]:
    """The predictors of `program` a target names; an empty match is an error."""
    named = list(program.named_predictors())
    if target is None:
        if len(named) == 1:
            return named
        raise TargetNotFoundError(
            f"a constraint without a target needs a program with exactly one predictor; this one has "
            f"{len(named)}: {', '.join(n for n, _ in named)}"
        )
    if isinstance(target, dspy.Module) and not isinstance(target, dspy.Predict):
        inner = target.predictors()
        if len(inner) != 1:
            raise TargetNotFoundError(
                f"target module {type(target).__name__} contains {len(inner)} predictors; name one of them"
            )
    hits = [(n, p) for n, p in named if matches_target(p, n, target)]
    if not hits:
        raise TargetNotFoundError(
            f"target {describe_target(target)} matches no predictor of {type(program).__name__}; "
            f"predictors: {', '.join(n for n, _ in named) or 'none'}"
        )
    return hits
