"""The paper's five settings: their keys, their labels, the names a user may give them, and which
pairs compare like with like (the headlines and the comparison table use these pairs)."""

from __future__ import annotations

from collections.abc import Iterable

VANILLA = "vanilla"
INFER_ASSERT = "infer_assert"
COMPILE = "compile"
COMPILE_ASSERT = "compile_assert"
C_INFER_ASSERT = "c_infer_assert"
SETTINGS = (VANILLA, INFER_ASSERT, COMPILE, COMPILE_ASSERT, C_INFER_ASSERT)
ALL_CONSTRAINTS = "all constraints"  # the measure: an example passes when its output satisfies every constraint
LABELS = {
    VANILLA: "Vanilla",
    INFER_ASSERT: "Infer w/ Assert",
    COMPILE: "Compile",
    COMPILE_ASSERT: "Compile w/ Assert",
    C_INFER_ASSERT: "C+Infer w/ Assert",
}
_ALIASES = {
    **{k: k for k in SETTINGS},
    **{v.lower(): k for k, v in LABELS.items()},
    "infer": INFER_ASSERT,
    "compile_w_assert": COMPILE_ASSERT,
    "c+infer": C_INFER_ASSERT,
    "cinfer": C_INFER_ASSERT,
}


def normalize_settings(settings: Iterable[str] | str | None) -> tuple[str, ...]:
    """Accept keys, labels or a comma list; keep the paper's order; unknown names are an error."""
    if settings is None:
        return SETTINGS
    if isinstance(settings, str):
        settings = [s for s in settings.split(",") if s.strip()]
    chosen = set()
    for raw in settings:
        key = _ALIASES.get(raw.strip().lower().replace(" ", "_").replace("/", "")) or _ALIASES.get(raw.strip().lower())
        if key is None:
            raise ValueError(f"unknown setting {raw!r}; choose from {', '.join(SETTINGS)}")
        chosen.add(key)
    if not chosen:
        raise ValueError("no settings chosen")
    return tuple(s for s in SETTINGS if s in chosen)


#: (base, setting) pairs that differ in one thing only: assertions at inference, while compiling,
#: and at inference on top of an asserted compile.
HEADLINE_PAIRS = ((VANILLA, INFER_ASSERT), (COMPILE, COMPILE_ASSERT), (COMPILE_ASSERT, C_INFER_ASSERT))
