"""Runs the DSPy 2.5.43 system (bench/dspy25_harness.py) in its own venv and serves what it asks for.

DSPy 2.5.43 and DSPy 3 cannot share a venv, so the harness is a subprocess talking to the embedded model over
its loopback endpoint. The main process answers three kinds of request on a pipe, so this system is run and
counted like the others: ``format`` (the package's request format and json_schema for the step), ``judge``
(`lmassert_magic.lm_judge`, counted as this system's calls) and ``retrieve`` (the study's BM25 retriever).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peer_programs as programs
import peer_tasks
from peer_checkpoint import Checkpoint, Progress

from lmassert_magic.lm import SchemaJSONAdapter, response_format_for
from lmassert_magic.lm.local import DEFAULT_LM_KWARGS

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "dspy25_harness.py"
VENV_ENV = "LMASSERT_DSPY25_VENV"
DEFAULT_VENV = HERE / "_venv25"
DSPY25_VERSION = "2.5.43"
REQUESTS = frozenset({"format", "judge", "retrieve"})  # the messages the harness waits for an answer to
_ADAPTER = SchemaJSONAdapter()  # what AutoAdapter hands the embedded model's calls to


def format_request(message: dict[str, Any]) -> dict[str, Any]:
    """The messages and response format a DSPy 3 system would send for this signature and these inputs."""
    signature = peer_tasks.signature_from_spec(message["signature"])
    inputs = {k: v for k, v in message["inputs"].items() if k in signature.input_fields}
    return {
        "messages": _ADAPTER.format(signature, list(message.get("demos") or []), inputs),
        "response_format": response_format_for(signature, nonempty_strings=_ADAPTER.nonempty_strings),
    }


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def find_venv(venv: Path | None = None) -> Path | None:
    """The DSPy 2.5.43 venv's python: `venv`, else $LMASSERT_DSPY25_VENV, else bench/_venv25; None if absent."""
    for candidate in (venv, os.environ.get(VENV_ENV), DEFAULT_VENV):
        if candidate and venv_python(Path(candidate)).exists():
            return venv_python(Path(candidate))
    return None


def ensure_venv(venv: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The venv's python, creating the venv with dspy==2.5.43 first if needed (about 2 minutes, once).

    `dspy==2.5.43`, not `dspy-ai==2.5.43`: the latter is a meta-package that resolves to DSPy 3.
    """
    found = find_venv(venv)
    if found is not None:
        return found
    target = Path(venv or os.environ.get(VENV_ENV) or DEFAULT_VENV)
    log(f"creating {target} with dspy=={DSPY25_VERSION} (about 2 minutes, once)...")
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    subprocess.run([str(venv_python(target)), "-m", "pip", "install", "-q", f"dspy=={DSPY25_VERSION}"], check=True)
    return venv_python(target)


def _task(study: str, examples: list[dict], url: str) -> dict[str, Any]:
    return {
        "study": study,
        "examples": examples,
        "inputs": list(programs.INPUTS[study]),
        "url": url,
        "lm_kwargs": {**DEFAULT_LM_KWARGS, "num_retries": 1},
        "signatures": {name: peer_tasks.signature_spec(sig) for name, sig in programs.SIGNATURES.items()},
        "max_backtracks": programs.MAX_BACKTRACKS,
        "hops": programs.HOPS,
    }


class _Server:
    """Answers the harness's requests and turns its per-example reports into checkpoint rows."""

    def __init__(self, study: str, checkpoint: Checkpoint, progress: Progress, log: Callable[[str], None],
                 retrieve: Callable[[str], list[str]] | None) -> None:
        self.study, self.checkpoint, self.progress, self.log, self.retrieve = study, checkpoint, progress, log, retrieve
        programs.cold_cache()  # the judge's cache starts cold with this system, like every other system's
        self.judge = programs.CountingJudge()
        self.mark = self.judge.snapshot()
        self.finished = False

    def answer(self, message: dict[str, Any]) -> dict[str, Any] | None:
        kind = message.get("type")
        if kind == "format":
            return format_request(message)
        if kind == "judge":
            return {"verdict": bool(self.judge(message["question"], **message["fields"]))}
        if kind == "retrieve":
            if self.retrieve is None:
                raise RuntimeError("this study has no retriever")
            return {"passages": list(self.retrieve(message["query"]))}
        if kind == "hello":
            self.checkpoint.append({"kind": "versions", "system": programs.DSPY25, **message["versions"]})
            if message["versions"].get("dspy 2.5") != DSPY25_VERSION:
                self.log(f"warning: the harness runs dspy {message['versions'].get('dspy 2.5')}, not {DSPY25_VERSION}")
        elif kind == "example":
            self._record(message)
        elif kind == "done":
            self.finished = True
        return None

    def _record(self, message: dict[str, Any]) -> None:
        calls, hits, tokens = self.judge.snapshot()
        judge_calls, judge_hits, judge_tokens = calls - self.mark[0], hits - self.mark[1], tokens - self.mark[2]
        self.mark = (calls, hits, tokens)
        row = {
            "kind": "run", "study": self.study, "system": programs.DSPY25, "id": message["id"],
            "outputs": message["outputs"], "error": message["error"],
            "lm_calls": message["lm_calls"] + judge_calls, "judge_calls": judge_calls,
            "cache_hits": message["cache_hits"] + judge_hits, "judge_cache_hits": judge_hits,
            "tokens": message["tokens"] + judge_tokens, "seconds": message["seconds"],
        }
        self.checkpoint.append(row)
        self.log(self.progress.line(row))


def run_dspy25(study: str, examples: list[dict], checkpoint: Checkpoint, *, url: str | None = None,
               python: Path | None = None, log: Callable[[str], None] = print,
               retrieve: Callable[[str], list[str]] | None = None) -> None:
    """Run the DSPy 2.5.43 system on the examples the checkpoint lacks; one checkpoint row per example."""
    done = checkpoint.done("run", study, programs.DSPY25)
    todo = [ex for ex in examples if ex["id"] not in done]
    if not todo:
        return
    if url is None:
        from lmassert_magic.lm import local_server_url

        url = local_server_url()
    python = python or ensure_venv(log=log)
    server = _Server(study, checkpoint, Progress(study, programs.DSPY25, len(examples), len(examples) - len(todo)),
                     log, retrieve)
    with tempfile.TemporaryDirectory(prefix="peers-dspy25-") as tmp:
        task_path = Path(tmp) / "task.json"
        task_path.write_text(json.dumps(_task(study, todo, url)), encoding="utf-8")
        to_child, from_main = os.pipe()
        to_main, from_child = os.pipe()
        env = {**os.environ, "DSP_CACHEDIR": str(Path(tmp) / "cache"), "DSPY_CACHEDIR": str(Path(tmp) / "cache"),
               "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no network fetch at import
        with (Path(tmp) / "harness.log").open("w+", encoding="utf-8") as harness_log:
            proc = subprocess.Popen([str(python), str(HARNESS), str(task_path), str(to_child), str(from_child)],
                                    pass_fds=(to_child, from_child), stdout=harness_log, stderr=harness_log,
                                    stdin=subprocess.DEVNULL, env=env, cwd=str(HERE))
            os.close(to_child)
            os.close(from_child)
            try:
                _serve(server, to_main, from_main)
            finally:
                code = proc.wait()
                harness_log.seek(0)
                tail = harness_log.read()[-3000:]
    if code != 0 or not server.finished:
        raise RuntimeError(f"the DSPy 2.5.43 harness stopped (exit code {code}); its log ends with:\n{tail}")


def _serve(server: _Server, inbox_fd: int, outbox_fd: int) -> None:
    with os.fdopen(inbox_fd, "r", encoding="utf-8") as inbox, os.fdopen(outbox_fd, "w", encoding="utf-8") as outbox:
        for line in inbox:
            message = json.loads(line)
            try:
                reply = server.answer(message)
            except Exception as exc:  # the harness turns it into a failed check or a failed example
                if message.get("type") not in REQUESTS:
                    raise
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            if reply is not None:
                outbox.write(json.dumps(reply, default=str) + "\n")
                outbox.flush()
            if server.finished:
                return
