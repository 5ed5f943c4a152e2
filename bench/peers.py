"""This package against its peers on the embedded model: same data, same constraints, one run.

Systems: no assertions; lmassert_magic Infer w/ Assert (2 backtracks); dspy.Refine and
dspy.BestOfN (N=3, reward = fraction of constraints passed, threshold 1.0); DSPy 2.5.43's own
dspy.Suggest with backtrack_handler, run in its own venv (bench/_venv25, created on first use) and
talking to the same embedded model over its loopback OpenAI-compatible endpoint.

Each system starts with a cold LM cache. Pass rates are measured afterwards on every system's
final outputs with the same checks and the same judge, outside the systems' LM-call counts.

    python bench/peers.py [--n 12] [--studies tweetgen,quizgen] [--skip-dspy25]

Writes bench/RESULTS.md and bench/peers.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import dspy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_tasks  # noqa: E402

from lmassert_magic import Constraint, activate_assertions  # noqa: E402
from lmassert_magic.datasets import load_study  # noqa: E402
from lmassert_magic.engine.runtime import tally_lm  # noqa: E402

SYSTEMS = ["no assertions", "lmassert_magic (Infer w/ Assert)", "dspy.Refine (N=3)", "dspy.BestOfN (N=3)",
           "DSPy 2.5.43 Suggest"]
OURS = SYSTEMS[1]


# ---------------------------------------------------------------- programs (DSPy 3)


class GenerateAnswer(dspy.Signature):
    """Answer the question with a short phrase taken from the context."""

    context: list[str] = dspy.InputField(desc="passages that may contain the answer")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words")


class GenerateTweet(dspy.Signature):
    """Write an engaging tweet that answers the question, faithful to the context."""

    question: str = dspy.InputField()
    context: list[str] = dspy.InputField()
    answer: str = dspy.InputField()
    tweet: str = dspy.OutputField()


class GenerateChoices(dspy.Signature):
    """Write four answer options for the quiz question: the correct answer and three plausible wrong ones. Return a JSON object like {"A": "...", "B": "...", "C": "...", "D": "..."}."""  # noqa: E501

    question: str = dspy.InputField()
    answer: str = dspy.InputField(desc="the correct answer")
    choices: str = dspy.OutputField(desc="JSON object with keys A, B, C, D")


class TweetPipeline(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_answer = dspy.Predict(GenerateAnswer)
        self.generate_tweet = dspy.Predict(GenerateTweet)

    def forward(self, question: str, context: list[str]) -> dspy.Prediction:
        answer = self.generate_answer(context=context, question=question).answer
        tweet = self.generate_tweet(question=question, context=context, answer=answer).tweet
        return dspy.Prediction(answer=answer, tweet=tweet)


class QuizPipeline(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_choices = dspy.Predict(GenerateChoices)

    def forward(self, question: str, answer: str) -> dspy.Prediction:
        return dspy.Prediction(choices=self.generate_choices(question=question, answer=answer).choices)


PIPELINES = {"tweetgen": (TweetPipeline, GenerateTweet), "quizgen": (QuizPipeline, GenerateChoices)}
INPUTS = {"tweetgen": ("question", "context"), "quizgen": ("question", "answer")}


class _Judge(dspy.Signature):
    """Answer the yes/no question about the text honestly."""

    text: str = dspy.InputField()
    question: str = dspy.InputField()
    answer: bool = dspy.OutputField(desc="true for yes, false for no")


def judge(question: str, /, **fields: Any) -> bool:
    text = "\n".join(f"{k}: {v}" for k, v in fields.items())
    return bool(dspy.Predict(_Judge)(text=text, question=question).answer)


def constraints_for(study: str) -> list[Constraint]:
    target = PIPELINES[study][1]
    out = []
    for name, (check, feedback) in peer_tasks.CHECKS[study].items():
        out.append(Constraint(
            name,
            lambda check=check, **fields: bool(check(fields, judge)),
            lambda feedback=feedback, **fields: feedback(fields),
            target=target,
        ))
    return out


def build(system: str, study: str) -> dspy.Module:
    program = PIPELINES[study][0]()
    if system == OURS:
        return activate_assertions(program, max_backtracks=2, constraints=constraints_for(study))

    def reward(args: dict, prediction: Any) -> float:
        return peer_tasks.fraction_passed(study, {**args, **dict(prediction.items())}, judge)

    if system == "dspy.Refine (N=3)":
        return dspy.Refine(module=program, N=3, reward_fn=reward, threshold=1.0)
    if system == "dspy.BestOfN (N=3)":
        return dspy.BestOfN(module=program, N=3, reward_fn=reward, threshold=1.0)
    return program


# ---------------------------------------------------------------- running


def load_examples(study: str, n: int) -> list[dict]:
    data = load_study(study, limit=n)
    retriever = data.retriever(k=3)
    rows = []
    for ex in data.dev[:n]:
        row = {"question": ex.question, "answer": ex.answer}
        if study == "tweetgen":
            row["context"] = retriever(ex.question)
        else:
            row["same_kind"] = data.answer_values.get(ex.answer_type, [])
        rows.append(row)
    return rows


def run_in_process(system: str, study: str, examples: list[dict]) -> dict:
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # cold cache per system
    program = build(system, study)
    outputs, errors = [], 0
    start = time.perf_counter()
    with tally_lm() as tally:
        for ex in examples:
            try:
                pred = program(**{k: ex[k] for k in INPUTS[study]})
                outputs.append({k: v for k, v in pred.items()})
            except Exception as exc:
                errors += 1
                outputs.append({"error": f"{type(exc).__name__}: {exc}"})
    return {"outputs": outputs, "seconds": time.perf_counter() - start, "lm_calls": tally.calls,
            "tokens": tally.tokens, "errors": errors}


DSPY25_SCRIPT = textwrap.dedent(
    r'''
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import dspy
    import dspy.clients.lm as lm_module
    from dspy.primitives.assertions import assert_transform_module, backtrack_handler
    import peer_tasks

    task = json.load(open(sys.argv[2]))
    study, examples, url = task["study"], task["examples"], task["url"]
    calls = {"n": 0, "tokens": 0}
    real_completion = lm_module.litellm_completion

    def counting_completion(request, num_retries, cache={"no-cache": True, "no-store": True}):
        response = real_completion(request, num_retries, cache=cache)
        calls["n"] += 1
        calls["tokens"] += (getattr(response, "usage", None) or {}).get("total_tokens", 0) or 0
        return response

    lm_module.litellm_completion = counting_completion  # LRU misses = requests that reach the model
    lm = dspy.LM("openai/smollm2", api_base=url, api_key="local", temperature=0.0, max_tokens=512)
    dspy.settings.configure(lm=lm, adapter=dspy.JSONAdapter())

    class Judge(dspy.Signature):
        """Answer the yes/no question about the text honestly."""
        text: str = dspy.InputField()
        question: str = dspy.InputField()
        answer: bool = dspy.OutputField(desc="true for yes, false for no")

    def judge(question, /, **fields):
        text = "\n".join(f"{k}: {v}" for k, v in fields.items())
        return bool(dspy.Predict(Judge)(text=text, question=question).answer)

    class GenerateAnswer(dspy.Signature):
        """Answer the question with a short phrase taken from the context."""
        context: list[str] = dspy.InputField(desc="passages that may contain the answer")
        question: str = dspy.InputField()
        answer: str = dspy.OutputField(desc="a few words")

    class GenerateTweet(dspy.Signature):
        """Write an engaging tweet that answers the question, faithful to the context."""
        question: str = dspy.InputField()
        context: list[str] = dspy.InputField()
        answer: str = dspy.InputField()
        tweet: str = dspy.OutputField()

    class GenerateChoices(dspy.Signature):
        """Write four answer options for the quiz question: the correct answer and three plausible wrong ones. Return a JSON object like {"A": "...", "B": "...", "C": "...", "D": "..."}."""
        question: str = dspy.InputField()
        answer: str = dspy.InputField(desc="the correct answer")
        choices: str = dspy.OutputField(desc="JSON object with keys A, B, C, D")

    def suggest_all(fields, target):
        for name, (check, feedback) in peer_tasks.CHECKS[study].items():
            try:
                ok = bool(check(fields, judge))
            except Exception:
                ok = False
            dspy.Suggest(ok, feedback(fields), target_module=target)

    class TweetPipeline(dspy.Module):
        def __init__(self):
            super().__init__()
            self.generate_answer = dspy.Predict(GenerateAnswer)
            self.generate_tweet = dspy.Predict(GenerateTweet)
        def forward(self, question, context):
            answer = self.generate_answer(context=context, question=question).answer
            tweet = self.generate_tweet(question=question, context=context, answer=answer).tweet
            suggest_all({"question": question, "context": context, "answer": answer, "tweet": tweet},
                        self.generate_tweet)
            return dspy.Prediction(answer=answer, tweet=tweet)

    class QuizPipeline(dspy.Module):
        def __init__(self):
            super().__init__()
            self.generate_choices = dspy.Predict(GenerateChoices)
        def forward(self, question, answer):
            choices = self.generate_choices(question=question, answer=answer).choices
            suggest_all({"question": question, "answer": answer, "choices": choices}, self.generate_choices)
            return dspy.Prediction(choices=choices)

    pipeline = TweetPipeline() if study == "tweetgen" else QuizPipeline()
    program = assert_transform_module(pipeline.map_named_predictors(dspy.Retry), backtrack_handler)
    inputs = ("question", "context") if study == "tweetgen" else ("question", "answer")
    outputs, errors = [], 0
    start = time.perf_counter()
    for ex in examples:
        try:
            pred = program(**{k: ex[k] for k in inputs})
            outputs.append({k: v for k, v in pred.items()})
        except Exception as exc:
            errors += 1
            outputs.append({"error": f"{type(exc).__name__}: {exc}"})
    print(json.dumps({"outputs": outputs, "seconds": time.perf_counter() - start,
                      "lm_calls": calls["n"], "tokens": calls["tokens"], "errors": errors}))
    '''
)


def ensure_dspy25() -> Path:
    python = HERE / "_venv25" / "bin" / "python"
    if not python.exists():
        print("creating bench/_venv25 with dspy==2.5.43 (about 2 minutes, once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(HERE / "_venv25")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "dspy==2.5.43"], check=True)
    return python


def run_dspy25(study: str, examples: list[dict]) -> dict:
    from lmassert_magic.lm import local_server_url

    python = ensure_dspy25()
    url = local_server_url()
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task.json"
        task.write_text(json.dumps({"study": study, "examples": examples, "url": url}))
        env = {**os.environ, "DSP_CACHEDIR": str(Path(tmp) / "cache"), "DSPY_CACHEDIR": str(Path(tmp) / "cache")}
        out = subprocess.run([str(python), "-c", DSPY25_SCRIPT, str(HERE), str(task)],
                             capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"DSPy 2.5.43 run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(study: str, examples: list[dict], run: dict) -> dict:
    """Pass rate per constraint and the metric, on final outputs, with the shared checks and judge."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    metric_name, metric = peer_tasks.METRICS[study]
    passes = {name: 0 for name in peer_tasks.CHECKS[study]}
    score = 0.0
    for ex, out in zip(examples, run["outputs"]):
        if "error" in out:
            continue
        fields = {**{k: ex[k] for k in INPUTS[study]}, **out}
        for name, (check, _) in peer_tasks.CHECKS[study].items():
            try:
                passes[name] += bool(check(fields, judge))
            except Exception:
                pass
        score += metric(ex, out)
    n = len(examples)
    return {
        "pass": {k: 100 * v / n for k, v in passes.items()},
        "all_pass": 100 * sum(passes.values()) / (n * len(passes)),
        metric_name: 100 * score / n,
        "calls/ex": run["lm_calls"] / n,
        "tokens/ex": run["tokens"] / n,
        "seconds": run["seconds"],
        "errors": run["errors"],
    }


def write_results(results: dict, n: int, path: Path, chart: Path) -> str:
    lines = [
        "# Peer benchmark: lmassert_magic vs dspy.Refine, dspy.BestOfN and DSPy 2.5.43 assertions",
        "",
        f"Embedded model SmolLM2-135M-Instruct (Q4_1, llama.cpp via xllamacpp, 2 CPU cores), {n} dev examples "
        "per study, cold LM cache per system. Pass rates are on final outputs, checked afterwards with the "
        "same checks and judge for every system. `python bench/peers.py` regenerates this file.",
        "",
    ]
    for study, per_system in results.items():
        metric_name = peer_tasks.METRICS[study][0]
        names = list(peer_tasks.CHECKS[study])
        lines += [f"## {study}", "", "| system | " + " | ".join(names) + f" | all constraints | {metric_name} | "
                  "LM calls/ex | tokens/ex | seconds | errors |",
                  "|---" * (len(names) + 7) + "|"]
        for system, m in per_system.items():
            cells = [f"{m['pass'][c]:.0f}" for c in names]
            lines.append(f"| {system} | " + " | ".join(cells) + f" | {m['all_pass']:.1f} | {m[metric_name]:.1f} | "
                         f"{m['calls/ex']:.2f} | {m['tokens/ex']:.0f} | {m['seconds']:.0f} | {m['errors']} |")
        ours = per_system.get(OURS)
        if ours:
            lines += ["", "Ratios against lmassert_magic (other / ours):", ""]
            for system, m in per_system.items():
                if system == OURS:
                    continue
                r_calls = m["calls/ex"] / ours["calls/ex"] if ours["calls/ex"] else float("nan")
                r_time = m["seconds"] / ours["seconds"] if ours["seconds"] else float("nan")
                lines.append(f"* {system}: constraint pass {m['all_pass']:.1f} vs {ours['all_pass']:.1f}, "
                             f"LM calls x{r_calls:.2f}, wall time x{r_time:.2f}")
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text + "\n", encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
        for ax, (study, per_system) in zip(axes[0], results.items()):
            systems = list(per_system)
            ax.bar(range(len(systems)), [per_system[s]["all_pass"] for s in systems], color="#4c72b0")
            ax.set_xticks(range(len(systems)), [s.split(" (")[0] for s in systems], rotation=25, ha="right")
            ax.set_ylabel("constraints passed (%)")
            ax.set_title(study)
            for i, s in enumerate(systems):
                ax.text(i, per_system[s]["all_pass"] + 1, f"{per_system[s]['calls/ex']:.1f} calls", ha="center",
                        fontsize=8)
        fig.tight_layout()
        fig.savefig(chart, dpi=110)
    except ImportError:
        print("matplotlib missing: no chart written")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="dev examples per study")
    parser.add_argument("--studies", default="tweetgen,quizgen")
    parser.add_argument("--skip-dspy25", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    from lmassert_magic.lm import configure_lm

    configure_lm("local")
    results: dict[str, dict] = {}
    for study in [s.strip() for s in args.studies.split(",") if s.strip()]:
        examples = load_examples(study, args.n)
        results[study] = {}
        for system in SYSTEMS:
            if system == SYSTEMS[-1]:
                if args.skip_dspy25:
                    continue
                run = run_dspy25(study, examples)
            else:
                run = run_in_process(system, study, examples)
            results[study][system] = measure(study, examples, run)
            m = results[study][system]
            print(f"{study:9s} {system:34s} pass {m['all_pass']:5.1f}%  calls/ex {m['calls/ex']:5.2f}  "
                  f"tokens/ex {m['tokens/ex']:6.0f}  {m['seconds']:6.0f}s  errors {m['errors']}", flush=True)
    print()
    print(write_results(results, args.n, args.out, args.out.with_name("peers.png")))


if __name__ == "__main__":
    main()
