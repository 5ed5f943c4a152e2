"""Offline, judge-free proxies for checks an LM judge would otherwise make.

Why: on the embedded 135M model an LM judge answers at chance (see FACTS.md and
:mod:`lmassert_magic.engine.calibration`), so a quality number must not rest on it. A proxy is crude but
deterministic, free, and its agreement with labelled items can be measured the same way as a judge's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["grounded_in_context", "names_and_numbers"]

# Words that are capitalised because they start a sentence, not because they name something. Generic
# English function words, pronouns, auxiliaries, interrogatives and interjections; not tuned to any dataset.
_COMMON = """
    a an the this that these those there here it its it's i i'm i've i'd we we're you you're your he she
    they them their our my me his her who whom whose what which where when why how whoever
    is are was were be been being am do does did done has have had having can could will would shall
    should may might must not no yes yeah ok okay oh wow hey hi hello so and but or nor yet for if then
    than as at by in on of off to from into onto with without about above after before between during
    under over up down out through all any each every some many much more most few both either neither
    one two three first next last just only also even still ever never always often now today tonight
    tomorrow yesterday
"""
COMMON_WORDS = frozenset(_COMMON.split())

_TOKEN = re.compile(r"[A-Za-z][\w'’-]*|\d+(?:[.,]\d+)*|[.!?:;\n]|[\"“”‘(\[]")
_SENTENCE_END = {".", "!", "?", ":", ";", "\n"}


def _clean(token: str) -> str:
    token = token.replace("’", "'")
    for suffix in ("'s", "'"):
        if token.lower().endswith(suffix) and len(token) > len(suffix):
            token = token[: -len(suffix)]
    return token.strip("-'")


def names_and_numbers(text: str) -> tuple[list[str], list[str]]:
    """The capitalised names and the numbers a text asserts, as the proxy sees them.

    A name is a run of adjacent capitalised words (possessive 's removed); a common word (COMMON_WORDS)
    at the start of a sentence is dropped from the front of its run ("Who directed" -> nothing, "The
    Violin Thief" at a sentence start -> "Violin Thief"), and "I" is never a name.
    """
    names: list[str] = []
    numbers: list[str] = []
    run: list[str] = []
    run_starts_sentence = False
    sentence_start = True

    def close() -> None:
        words = list(run)
        if run_starts_sentence:
            while words and words[0].lower() in COMMON_WORDS:
                words.pop(0)
        words = [w for w in words if w != "I"]
        if words:
            names.append(" ".join(words))
        run.clear()

    for tok in _TOKEN.findall(text):
        if tok[0].isdigit():
            close()
            numbers.append(tok.rstrip(".,"))
            sentence_start = False
        elif tok[0].isalpha():
            if tok[0].isupper():
                if not run:
                    run_starts_sentence = sentence_start
                run.append(_clean(tok))
            else:
                close()
            sentence_start = False
        else:
            close()
            if tok in _SENTENCE_END:
                sentence_start = True
            # an opening quote or bracket keeps the sentence-start state it found
    close()
    return names, numbers


def _haystack(context: Sequence[str] | str) -> str:
    text = context if isinstance(context, str) else "\n".join(str(c) for c in context)
    return " ".join(text.replace("’", "'").lower().split())


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word, case-insensitive; a possessive on either side still matches ("Ferro's" ~ "Ferro")."""
    words = (re.escape(w) + r"(?:'s|')?" for w in needle.lower().split())
    pattern = r"(?<![\w])" + r"\s+".join(words) + r"(?![\w])"
    return re.search(pattern, haystack) is not None


def grounded_in_context(tweet: str, context: Sequence[str] | str) -> bool:
    """True if every capitalised name and every number in `tweet` also appears in `context`.

    Case-insensitive, on whole words. A judge-free stand-in for "is the tweet faithful to the context?".

    Limits, by design of a string check: it sees names and numbers only, so a wrong *relation* between
    grounded names ("Lotte Vane wrote X" when she directed it), a false lower-case claim ("a comedy" for a
    drama) or a negation passes; a name written differently from the context (initials, a translation, a
    spelling slip) fails; a sentence-initial word outside COMMON_WORDS ("Amazing!") counts as a name and
    fails unless the context happens to contain it; a tweet with no names or numbers is always grounded.
    """
    names, numbers = names_and_numbers(tweet or "")
    hay = _haystack(context)
    if not all(_contains(hay, name) for name in names):
        return False
    return all(re.search(rf"(?<![\d.,]){re.escape(num)}(?![\d]|[.,]\d)", hay) for num in numbers)
