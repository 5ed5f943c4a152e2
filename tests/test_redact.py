"""`redact`'s quick substring check (it skips the key patterns on text that cannot hold a key) never
lets a key through: the same text through the patterns alone gives the same result."""

from __future__ import annotations

import importlib

from hypothesis import given, settings
from hypothesis import strategies as st

R = importlib.import_module("lmassert_magic.lm.redact")  # `lmassert_magic.lm.redact` is also the function

#: Fragments of every key shape, and near misses, to build texts from.
PIECES = ["sk-", "sk-proj-", "sk-ant-api03-", "ghp_", "gho_", "ghs_", "github_pat_", "hf_", "gsk_", "r8_", "xoxb-",
          "AKIA", "AIza", "glpat-", "Bearer ", "bearer ", "https://", "u:pw@", "://", "@", ":", " ", "_", "-",
          "A" * 16, "a1" * 20, "Z9" * 8, "é", "x"]


def patterns_only(text: str) -> str:
    text = R._KEY_PATTERNS.sub(R.REDACTED, text)
    return R._URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{R.REDACTED}@", text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12))
def test_the_quick_check_changes_nothing(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert R.redact(text, environ={}) == patterns_only(text)


def test_every_key_shape_is_still_caught() -> None:
    keys = ["sk-" + "a" * 20, "sk-proj-" + "b" * 20, "ghp_" + "c" * 36, "github_pat_" + "d" * 30, "hf_" + "e" * 30,
            "gsk_" + "f" * 30, "r8_" + "g" * 30, "xoxb-" + "h" * 12, "AKIA" + "I" * 16, "AIza" + "j" * 35,
            "glpat-" + "k" * 20]
    for key in keys:
        assert R.redact(f"x {key} y", environ={}) == f"x {R.REDACTED} y", key
    assert R.redact("Authorization: Bearer " + "t" * 20, environ={}) == f"Authorization: Bearer {R.REDACTED}"
    assert R.redact("https://user:secret@host/x", environ={}) == f"https://{R.REDACTED}@host/x"
