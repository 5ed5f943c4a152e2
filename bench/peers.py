"""This package against its peers on the embedded model: same programs, examples, constraints, judge and
response format; every LM call counted the same way.

Systems: no assertions; lmassert_magic Infer w/ Assert (2 backtracks, shared budget); dspy.Refine and
dspy.BestOfN (N=3, reward = share of constraints passed, threshold 1.0); DSPy 2.5.43's own dspy.Suggest with
backtrack_handler (max_backtracks=2), run in its own venv by bench/peer_dspy25.py. Studies: TweetGen and
multi-hop QA, every example each has (train + dev: no system is compiled here).

    python bench/peers.py [--studies tweetgen,multihop] [--n N] [--systems ours,refine,...]
                          [--dspy25-venv PATH] [--fresh] [--report-only]

Each example's result is appended to bench/results/peers_checkpoint.jsonl as it finishes; a restart skips
what is there (`--fresh` starts over). Then every final output is scored (constraint verdicts, the
judge-free quality), and bench/peers.json, bench/peers.png and the peers section of bench/RESULTS.md
(between its markers; other benches' sections are kept) are generated from the checkpoint. Run one model
process at a time on a small machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import dspy
import peer_programs as programs
import peer_report
import peer_tasks
from peer_checkpoint import Checkpoint, Progress
from peer_dspy25 import ensure_venv, run_dspy25

from lmassert_magic.datasets import answer_exact_match, answer_in_text, load_study

HERE = Path(__file__).resolve().parent
CHECKPOINT = HERE / "results" / "peers_checkpoint.jsonl"
CONTEXT_PASSAGES = 3  # TweetGen's context: the top passages for the question, the same for every system
SYSTEM_KEYS = {"none": programs.NONE, "ours": programs.OURS, "refine": programs.REFINE,
               "bestofn": programs.BESTOFN, "dspy25": programs.DSPY25}
TWEET_LIMIT = 280

__all__ = ["Checkpoint", "load_examples", "main", "quality", "run_dspy3", "score_study"]


def load_examples(study: str, n: int | None = None) -> list[dict[str, Any]]:
    """Train then dev examples of the study (the first `n`), as plain dicts with stable ids."""
    data = load_study(study)
    retriever = data.retriever(k=CONTEXT_PASSAGES)
    rows = []
    for split, examples in (("train", data.train), ("dev", data.dev)):
        for i, ex in enumerate(examples):
            row = {"id": f"{split}-{i}", "question": ex.question, "answer": ex.answer}
            if study == "tweetgen":
                row["context"] = list(retriever(ex.question))
            rows.append(row)
    return rows[:n] if n else rows


def quality(study: str, example: dict[str, Any], outputs: dict[str, Any] | None) -> int:
    """The task metric, without an LM judge: TweetGen, the tweet states the gold answer in at most 280
    characters; multi-hop QA, the answer matches the gold answer."""
    if not outputs:
        return 0
    if study == "tweetgen":
        tweet = str(outputs.get("tweet") or "")
        return int(answer_in_text(example["answer"], tweet) and len(tweet) <= TWEET_LIMIT)
    return int(answer_exact_match(dspy.Example(answer=example["answer"]), outputs))


def retriever_for(study: str) -> Callable[[str], list[str]] | None:
    if study != "multihop":
        return None
    search = load_study(study, limit=0).retriever(k=programs.PASSAGES_PER_HOP)
    return lambda query: list(search(query))


def run_dspy3(system: str, study: str, examples: list[dict], checkpoint: Checkpoint, *, seed: int = 0,
              retrieve: Callable[[str], list[str]] | None = None, log: Callable[[str], None] = print) -> None:
    """Run one DSPy 3 system, from a cold cache, on the examples the checkpoint lacks."""
    done = checkpoint.done("run", study, system)
    todo = [ex for ex in examples if ex["id"] not in done]
    if not todo:
        return
    programs.cold_cache()
    judge = programs.CountingJudge()
    program = programs.build(system, study, judge, seed=seed, retrieve=retrieve)
    progress = Progress(study, system, len(examples), len(examples) - len(todo))
    for example in todo:
        row = {"kind": "run", "study": study, "system": system, "id": example["id"],
               **programs.run_example(program, study, example, judge)}
        checkpoint.append(row)
        log(progress.line(row))


def score_study(study: str, examples: list[dict], checkpoint: Checkpoint, systems: list[str],
                log: Callable[[str], None] = print) -> None:
    """Verdicts of every constraint and the quality of each system's final outputs (outside the systems' counts)."""
    from lmassert_magic import lm_judge

    by_id = {ex["id"]: ex for ex in examples}
    for system in systems:
        done = checkpoint.done("score", study, system)
        runs = [r for r in checkpoint.rows("run", study, system) if r["id"] in by_id and r["id"] not in done]
        for k, run in enumerate(runs, 1):
            example, outputs = by_id[run["id"]], run.get("outputs")
            if outputs:
                fields = {**{key: example[key] for key in programs.INPUTS[study]}, **outputs}
                verdicts = peer_tasks.final_verdicts(study, fields, lm_judge)
            else:
                verdicts = dict.fromkeys(peer_tasks.CHECKS[study], False)
            checkpoint.append({"kind": "score", "study": study, "system": system, "id": run["id"],
                               "verdicts": verdicts, "quality": quality(study, example, outputs)})
            if k % 10 == 0 or k == len(runs):
                log(f"{study} | scoring {system} | {k}/{len(runs)}")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("dspy", "lmassert_magic", "xllamacpp", "litellm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _config(checkpoint: Checkpoint, seed: int) -> dict[str, Any]:
    config = checkpoint.first("config")
    if config is None:
        from lmassert_magic.lm.local import local_model_name

        config = {"kind": "config", "seed": seed, "versions": versions(), "model": local_model_name()}
        checkpoint.append(config)
    elif config.get("seed") != seed:
        raise SystemExit(f"{checkpoint.path} was made with seed {config.get('seed')}; pass --seed "
                         f"{config.get('seed')} to resume it or --fresh to start over")
    return config


def write_outputs(checkpoint: Checkpoint, out_dir: Path) -> dict[str, Any]:
    """peers.json, RESULTS.md and peers.png from the checkpoint's rows."""
    config = checkpoint.first("config") or {}
    found = dict(config.get("versions") or {})
    for row in checkpoint.all_rows:
        if row.get("kind") == "versions":
            found.update({k: v for k, v in row.items() if k not in ("kind", "system")})
    report = peer_report.build_report(checkpoint.all_rows, seed=config.get("seed", 0), versions=found,
                                      model=config.get("model"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "peers.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    results = out_dir / "RESULTS.md"
    old = results.read_text(encoding="utf-8") if results.exists() else ""
    results.write_text(peer_report.replace_section(old, peer_report.results_markdown(report)), encoding="utf-8")
    if report["studies"] and not peer_report.write_chart(report, out_dir / "peers.png"):
        print("matplotlib missing: no chart written")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default=",".join(peer_tasks.STUDIES))
    parser.add_argument("--n", type=int, default=None, help="first N examples per study (default: all, 80)")
    parser.add_argument("--systems", default=",".join(SYSTEM_KEYS), help="of: " + ", ".join(SYSTEM_KEYS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dspy25-venv", type=Path, default=None,
                        help="venv with dspy==2.5.43 (default $LMASSERT_DSPY25_VENV or bench/_venv25, made if missing)")
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--fresh", action="store_true", help="start over: drop the checkpoint")
    parser.add_argument("--report-only", action="store_true", help="only regenerate the outputs from the checkpoint")
    args = parser.parse_args(argv)

    checkpoint = Checkpoint(args.checkpoint, fresh=args.fresh)
    if not args.report_only:
        run(args, checkpoint)
    report = write_outputs(checkpoint, args.out_dir)
    names = ["peers.json", "RESULTS.md", *(["peers.png"] if report["studies"] else [])]
    print("wrote " + ", ".join(str(args.out_dir / name) for name in names))


def run(args: argparse.Namespace, checkpoint: Checkpoint) -> None:
    from lmassert_magic.lm import configure_lm

    systems = [SYSTEM_KEYS[k.strip()] for k in args.systems.split(",") if k.strip()]
    studies = [s.strip() for s in args.studies.split(",") if s.strip()]
    unknown = [s for s in studies if s not in peer_tasks.STUDIES]
    if unknown:
        raise SystemExit(f"unknown studies {unknown}; the bench runs {', '.join(peer_tasks.STUDIES)}")
    _config(checkpoint, args.seed)
    python = ensure_venv(args.dspy25_venv) if programs.DSPY25 in systems else None
    configure_lm("local")
    for study in studies:
        examples = load_examples(study, args.n)
        retrieve = retriever_for(study)
        print(f"{study}: {len(examples)} examples, systems: {', '.join(systems)}", flush=True)
        for system in systems:
            if system == programs.DSPY25:
                run_dspy25(study, examples, checkpoint, python=python, retrieve=retrieve, log=_log)
            else:
                run_dspy3(system, study, examples, checkpoint, seed=args.seed, retrieve=retrieve, log=_log)
        score_study(study, examples, checkpoint, systems, log=_log)


def _log(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
