"""A small in-memory BM25 retriever, so the case studies run offline with no vector store or embedding model.

The main contract is a plain callable, ``retriever(query, k=None) -> list[str]``, which drops into a pipeline
as an ordinary Python step (``retrieve >> GenerateTweet``). For code written against DSPy's retrieval
interface, ``dspy.configure(rm=retriever.as_rm())`` makes ``dspy.Retrieve(k=...)`` use it too.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi

__all__ = ["BM25Retriever", "STOPWORDS", "tokenize"]

_WORD_RE = re.compile(r"\w+")

# Deliberately tiny: question words and glue. BM25's idf already discounts common words; these only add noise.
_STOPWORD_TEXT = (
    "a an and are as at be by did do does for from has have how in into is it its of on or that the this to "
    "was were what when where which who whom whose why with"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stopwords; used for passages and queries alike so they match."""
    return [tok for tok in _WORD_RE.findall(text.casefold()) if tok not in STOPWORDS]


class BM25Retriever:
    """BM25 (Okapi) over a fixed list of passages; build once, query many times.

    Results are the ``k`` best passages by score; equal scores keep corpus order, so results are
    deterministic. A query with no known words still returns ``k`` passages (all scored 0, in corpus order),
    so downstream steps always receive a list of the expected length.

    Copies (including ``copy.deepcopy``, which DSPy applies to programs when compiling) share the index, so
    a retriever held by a module costs nothing to copy.
    """

    def __init__(self, passages: Iterable[str], k: int = 3) -> None:
        self._passages: tuple[str, ...] = tuple(passages)
        if not self._passages:
            raise ValueError("BM25Retriever needs at least one passage")
        if not all(isinstance(p, str) for p in self._passages):
            raise TypeError("BM25Retriever passages must be strings")
        self.k = _check_k(k)
        # Pre-tokenised corpus and no tokenizer argument: rank_bm25 would otherwise start a multiprocessing Pool.
        self._bm25 = BM25Okapi([tokenize(p) for p in self._passages])

    @property
    def passages(self) -> tuple[str, ...]:
        return self._passages

    def __len__(self) -> int:
        return len(self._passages)

    def __repr__(self) -> str:
        return f"BM25Retriever({len(self._passages)} passages, k={self.k})"

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for ``query`` (corpus order)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return self._bm25.get_scores(tokenize(query))

    def search(self, query: str, k: int | None = None) -> list[tuple[str, float]]:
        """The top ``k`` passages with their scores, best first (ties in corpus order)."""
        k = self.k if k is None else _check_k(k)
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self._passages[i], float(scores[i])) for i in order]

    def __call__(self, query: str, k: int | None = None) -> list[str]:
        """The top ``k`` passages (text only), best first."""
        return [passage for passage, _ in self.search(query, k)]

    def with_k(self, k: int) -> BM25Retriever:
        """A copy returning ``k`` passages by default, sharing this retriever's index."""
        clone = copy.copy(self)
        clone.k = _check_k(k)
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> BM25Retriever:
        # The index is never mutated after construction, so a deep copy may share it.
        clone = copy.copy(self)
        memo[id(self)] = clone
        return clone

    def as_rm(self) -> Callable[..., list[Any]]:
        """An adapter for ``dspy.configure(rm=...)``, whose ``dspy.Retrieve`` reads ``.long_text`` per hit."""
        from dspy.dsp.utils import dotdict

        def rm(query: str, k: int | None = None, **_: Any) -> list[dotdict]:
            return [dotdict(long_text=p, score=s) for p, s in self.search(query, k)]

        return rm


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    return k
