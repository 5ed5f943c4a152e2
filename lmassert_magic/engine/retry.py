"""What a retry sends: the failing step's signature with `past_<field>` and `feedback` inputs, at a
rollout of its own (a fresh cache entry, the same in every run with the same seed)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy

FEEDBACK_DESC = "Instructions to fix your previous answer. Follow them."
#: The first line of a retry's feedback when the step's last retry returned an output it had returned before.
REPEAT_NOTE = "Your last answer was identical to an earlier one; change it:"


@functools.lru_cache(maxsize=512)
def retry_signature(signature: type[dspy.Signature]) -> type[dspy.Signature]:
    """The signature plus `past_<output>` and `feedback` inputs (DSPy 3 drops unknown inputs)."""
    extended = signature
    for name, info in signature.output_fields.items():
        extended = extended.append(
            f"past_{name}",
            dspy.InputField(desc=f"your previous {name}, which failed a check"),
            type_=info.annotation if info.annotation is not None else str,
        )
    return extended.append("feedback", dspy.InputField(desc=FEEDBACK_DESC), type_=str)


def rollout_id(seed: int, step: str, inputs: dict[str, Any], attempt: int) -> int:
    """The rollout of one retry: distinct per step, inputs and attempt, the same in every run with `seed`.

    DSPy puts the rollout id in its cache key, so a retry never gets an earlier answer back, while a
    repeated run asks for exactly the same rollouts.
    """
    text = repr((seed, step, sorted((k, repr(v)) for k, v in inputs.items()), attempt))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=4).digest(), "big") >> 1


@dataclass
class RetryPlan:
    """The retry a step gets next: every message given to it so far, its last failing outputs, its number."""

    feedback: list[str]
    past: dict[str, Any]
    attempt: int


def sendable(value: Any) -> Any:
    """The failing output as a retry input an LM client accepts: half an emoji (a lone surrogate, from a
    JSON escape cut in two) makes DSPy refuse the whole request, so every retry of that step would fail."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return type(value)(sendable(v) for v in value)
    return value


def retry_request(
    predictor: Any, name: str, inputs: dict[str, Any], kwargs: dict[str, Any], plan: RetryPlan, *, seed: int,
    retry_temperature: float | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keyword arguments of a retry call (retry signature, config, inputs) and the inputs it is traced with.

    Built apart from the call so that a sync and an async call of the step send the same retry.
    """
    signature = retry_signature(predictor.signature)
    extra = {f"past_{k}": sendable(v) for k, v in plan.past.items()}
    extra["feedback"] = sendable("\n".join(plan.feedback))
    kwargs = dict(kwargs)
    config = dict(kwargs.pop("config", None) or {})
    lm = kwargs.get("lm") or predictor.lm or dspy.settings.lm
    temperature = config.get("temperature", getattr(lm, "kwargs", {}).get("temperature"))
    rollout = rollout_id(seed, name, inputs, plan.attempt)
    config["rollout_id"] = rollout  # a distinct cache entry per retry...
    config.setdefault("seed", rollout)  # ...sampled the same way in every run (DSPy drops it where unsupported)
    if (not temperature or temperature <= 0) and retry_temperature is not None:
        config["temperature"] = retry_temperature
    call_kwargs = {**kwargs, **extra}
    return {"signature": signature, "config": config, **call_kwargs}, call_kwargs


def send_retry(
    predictor: Any, name: str, inputs: dict[str, Any], kwargs: dict[str, Any], plan: RetryPlan,
    call: Callable[..., Any], *, seed: int, retry_temperature: float | None,
) -> tuple[Any, dict[str, Any]]:
    """Call the step again with the retry signature; returns the prediction and the inputs it was given."""
    request, call_kwargs = retry_request(predictor, name, inputs, kwargs, plan, seed=seed,
                                         retry_temperature=retry_temperature)
    return call(**request), call_kwargs
