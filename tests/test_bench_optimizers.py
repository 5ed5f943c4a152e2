"""bench/optimizers.py on a scripted LM: the quickstart's cells, both compiles, the JSON and the RESULTS.md
section generated from it (the embedded-model run is the benchmark itself)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSWER = "Rudmoor"
BETTER = "Write a short tweet that states the answer, with no hashtags."


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_optimizers", ROOT / "bench" / "optimizers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def respond(messages):
    """Tweets with a hashtag until GEPA's reflection, shown the constraints' feedback, rewrites the instruction."""
    system, last = messages[0]["content"], messages[-1]["content"]
    if "new_instruction" in system:
        return {"new_instruction": BETTER if "hashtag" in last else "Write a tweet."}
    if "yes/no question" in system:
        return {"answer": True}
    if "`tweet`" in system:
        return {"tweet": f"It is {ANSWER}!" + ("" if BETTER in system or "hashtag" in last else " #fact")}
    return {"answer": ANSWER}


def test_the_bench_runs_both_optimizers_and_writes_its_section(ip, scripted_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("LMASSERT_CACHE_DIR", str(tmp_path / "cache"))
    bench = load_bench()
    scripted_lm(respond)
    said = []
    before = {name: os.environ.get(name) for name in ("LMASSERT_SMALL", "LMASSERT_WIDGETS")}
    payload = bench.run(2, 8, 60.0, shell=ip, lm_configured=True, say=said.append)
    assert {name: os.environ.get(name) for name in before} == before  # set for the run only
    assert said[0].endswith("N = 2 train and dev examples") and any("GEPA with constraint feedback done" in s
                                                                    for s in said)
    assert set(payload["runs"]) == {"bootstrap", "gepa"}
    gepa = payload["runs"]["gepa"]
    assert gepa["compile"]["instructions"]["GenerateTweet"] == BETTER
    assert gepa["compile"]["notes"][0].startswith("GEPA: ")
    measures = gepa["settings"]["compile_assert"]["measures"]
    assert {"no_hashtags", "under_280", "all constraints"} <= set(measures) and measures["no_hashtags"]["rate"] == 100.0
    assert measures["no_hashtags"]["n"] == 2 and measures["no_hashtags"]["ci_low"] < 100.0  # a Wilson interval
    assert {d["setting"] for d in payload["differences"]} == {"compile_assert", "c_infer_assert"}

    results_md, json_path = tmp_path / "RESULTS.md", tmp_path / "results" / "optimizers_n2.json"
    results_md.write_text("# Peer benchmark\n\ntext\n", encoding="utf-8")
    bench.write(payload, json_path, results_md)
    bench.write(json.loads(json_path.read_text()), json_path, results_md)  # replaced, not appended twice
    text = results_md.read_text()
    assert text.startswith("# Peer benchmark\n\ntext\n") and text.count(bench.BEGIN) == 1
    row = next(line for line in text.splitlines() if line.startswith("| GEPA with constraint feedback"))
    header = next(line for line in text.splitlines() if line.startswith("| optimizer |")).split(" | ")
    assert row.split(" | ")[header.index("no_hashtags")] == "100.0 [34, 100]"  # 2 of 2, Wilson interval
    assert re.search(r"GEPA's instruction for GenerateTweet: .*no hashtags", text)
    assert "`python bench/optimizers.py --n 2 --max-metric-calls 8 --time-cap 60` regenerates" in text


def test_the_section_replaces_only_itself():
    bench = load_bench()
    old = f"# head\n\n{bench.BEGIN}\nold\n{bench.END}\n\n## after\n"
    assert bench.replace_section(old, f"{bench.BEGIN}\nnew\n{bench.END}") == (
        f"# head\n\n{bench.BEGIN}\nnew\n{bench.END}\n\n## after\n")
