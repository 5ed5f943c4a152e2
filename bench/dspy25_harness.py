"""The DSPy 2.5.43 system of the peer benchmark: run *inside the DSPy 2.5.43 venv* by bench/peer_dspy25.py.

    <venv>/bin/python bench/dspy25_harness.py TASK.json FD_IN FD_OUT

The programs use DSPy 2.5.43's own `dspy.Suggest`, `dspy.Retry` and `backtrack_handler` (max_backtracks=2),
and reach the embedded model over its loopback OpenAI-compatible endpoint. What would make the comparison
unfair is delegated to the main process over a line-of-JSON pipe (FD_OUT: requests, FD_IN: replies):

* ``format``: the messages and the ``json_schema`` response format of each request are built by the package's
  `SchemaJSONAdapter` (the one the DSPy 3 systems use), so every system asks the model the same way for
  grammar-constrained JSON of the same schema; DSPy 2.5.43 parses the reply with its own JSONAdapter;
* ``judge``: LM-judged checks call `lmassert_magic.lm_judge` in the main process, the judge every other
  system and the scoring use (its calls are counted there, as this system's);
* ``retrieve``: the multi-hop program's passages come from the same BM25 retriever.

Counting: every `LM.__call__` is a call; one that reaches litellm is a call to the model (the disk cache is
off, so the LRU cache's misses are exactly those); the rest are cache hits. Each example is reported back as
it finishes (``example``), so the main process can checkpoint it.

Nothing in this file imports DSPy at module level: the main environment's tests import `make_adapter`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Ask = Callable[[dict[str, Any]], dict[str, Any]]


def make_adapter(base: type, ask: Ask) -> type:
    """A subclass of DSPy 2.5's JSONAdapter (`base`) that sends the request the main process builds.

    Only the request changes: the call goes through DSPy 2.5's LM (its caching, its history) and the reply
    is parsed by `base.parse`.
    """
    import peer_tasks

    class ServedJSONAdapter(base):  # type: ignore[misc, valid-type]
        def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[Any],
                     inputs: dict[str, Any], _parse_values: bool = True) -> list[dict[str, Any]]:
            request = ask({
                "type": "format",
                "signature": peer_tasks.signature_spec(signature),
                "inputs": {k: v for k, v in inputs.items() if k in signature.input_fields},
                "demos": [dict(d) for d in demos],
            })
            kwargs = {**lm_kwargs, "response_format": request["response_format"]}
            outputs = lm(messages=request["messages"], **kwargs)
            return [self.parse(signature, output, _parse_values=_parse_values) for output in outputs]

    return ServedJSONAdapter


class Wire:
    """One JSON object per line each way; `ask` waits for the main process's answer."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self._in = os.fdopen(fd_in, "r", encoding="utf-8")
        self._out = os.fdopen(fd_out, "w", encoding="utf-8")

    def tell(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message, default=str) + "\n")
        self._out.flush()

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.tell(message)
        line = self._in.readline()
        if not line:
            raise RuntimeError("the main process closed the pipe")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply


def _programs(dspy: Any, task: dict[str, Any], wire: Wire) -> Any:
    """The study's program written the DSPy 2.5 way: `dspy.Suggest` right after the step it checks."""
    import peer_tasks

    study = task["study"]
    sigs = {name: peer_tasks.signature_from_spec(spec) for name, spec in task["signatures"].items()}

    def judge(question: str, /, **fields: Any) -> bool:
        return bool(wire.ask({"type": "judge", "question": question, "fields": fields})["verdict"])

    def retrieve(query: str) -> list[str]:
        return list(wire.ask({"type": "retrieve", "query": query})["passages"])

    def suggest_all(fields: dict[str, Any], target: Any) -> None:
        for check, feedback in peer_tasks.CHECKS[study].values():  # the first failure backtracks
            dspy.Suggest(peer_tasks.step_verdict(check, fields, judge), feedback(fields), target_module=target)

    class TweetPipeline(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.generate_answer = dspy.Predict(sigs["GenerateAnswer"])
            self.generate_tweet = dspy.Predict(sigs["GenerateTweet"])

        def forward(self, question: str, context: list[str]) -> Any:
            answer = self.generate_answer(context=context, question=question).answer
            tweet = self.generate_tweet(question=question, context=context, answer=answer).tweet
            suggest_all({"question": question, "context": context, "answer": answer, "tweet": tweet},
                        self.generate_tweet)
            return dspy.Prediction(answer=answer, tweet=tweet)

    class MultiHopQA(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.generate_query = [dspy.Predict(sigs["GenerateSearchQuery"]) for _ in range(task["hops"])]
            self.generate_answer = dspy.Predict(sigs["GenerateFactoid"])

        def forward(self, question: str) -> Any:
            context: list[str] = []
            queries: list[str] = []
            for hop in range(task["hops"]):
                query = self.generate_query[hop](context=context, question=question,
                                                 earlier_queries=list(queries)).query
                suggest_all({"query": query, "earlier_queries": list(queries)}, self.generate_query[hop])
                queries.append(query)
                context = list(dict.fromkeys(context + retrieve(query)))
            answer = self.generate_answer(context=context, question=question).answer
            return dspy.Prediction(answer=answer, context=context, queries=queries)

    return TweetPipeline() if study == "tweetgen" else MultiHopQA()


def main(argv: list[str]) -> int:
    task_path, fd_in, fd_out = argv[1], int(argv[2]), int(argv[3])
    sys.path.insert(0, str(HERE))
    task = json.loads(Path(task_path).read_text(encoding="utf-8"))
    wire = Wire(fd_in, fd_out)

    from importlib.metadata import version

    import dspy
    import dspy.clients.lm as lm_module
    from dspy.adapters.json_adapter import JSONAdapter
    from dspy.primitives.assertions import assert_transform_module, backtrack_handler

    found = {"dspy 2.5": version("dspy"), "litellm (dspy 2.5 venv)": version("litellm")}
    wire.tell({"type": "hello", "versions": found})
    counts = {"calls": 0, "reached": 0, "tokens": 0}
    real_completion = lm_module.litellm_completion

    def reaching_completion(request: dict, num_retries: int, cache: Any = None) -> Any:
        counts["reached"] += 1  # an LRU-cache miss: this request goes to the model (no disk cache)
        return real_completion(request, num_retries, cache={"no-cache": True, "no-store": True})

    lm_module.litellm_completion = reaching_completion

    class CountingLM(dspy.LM):
        def __call__(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            counts["calls"] += 1
            outputs = super().__call__(prompt=prompt, messages=messages, **kwargs)
            counts["tokens"] += int((self.history[-1].get("usage") or {}).get("total_tokens") or 0)
            return outputs

    lm = CountingLM("openai/embedded", api_base=task["url"], api_key="local", **task["lm_kwargs"])
    dspy.settings.configure(lm=lm, adapter=make_adapter(JSONAdapter, wire.ask)())
    program = assert_transform_module(_programs(dspy, task, wire).map_named_predictors(dspy.Retry), backtrack_handler,
                                      max_backtracks=task["max_backtracks"])
    inputs = task["inputs"]
    for example in task["examples"]:
        before = dict(counts)
        start = time.perf_counter()
        outputs, error = None, None
        try:
            prediction = program(**{k: example[k] for k in inputs})
            outputs = {k: v for k, v in prediction.items()}
        except Exception as exc:  # the example fails every check; the run goes on
            error = f"{type(exc).__name__}: {exc}"[:500]
        calls, reached = counts["calls"] - before["calls"], counts["reached"] - before["reached"]
        wire.tell({"type": "example", "id": example["id"], "outputs": outputs, "error": error, "lm_calls": reached,
                   "cache_hits": max(0, calls - reached), "tokens": counts["tokens"] - before["tokens"],
                   "seconds": round(time.perf_counter() - start, 3)})
    wire.tell({"type": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
