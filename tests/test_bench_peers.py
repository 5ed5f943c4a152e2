"""The peer benchmark (bench/peers.py) counts, records and reports every system the same way.

The systems run on a scripted LM here: what is checked is the bookkeeping (which calls are counted, which
are judge calls, which the cache answered), the records of bench/peers.json and that RESULTS.md's sentences
follow the numbers. The DSPy 2.5.43 harness is checked through its request building (the response format it
sends is the one the DSPy 3 systems send); a slow test runs it for real when a DSPy 2.5.43 venv exists.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import dspy
import pytest

from lmassert_magic.engine.retry import retry_signature
from lmassert_magic.lm import AutoAdapter, SchemaJSONAdapter, response_format_for
from lmassert_magic.testing import ScriptedLM

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import dspy25_harness  # noqa: E402
import peer_dspy25  # noqa: E402
import peer_programs as programs  # noqa: E402
import peer_report  # noqa: E402
import peer_tasks  # noqa: E402
import peers  # noqa: E402

ANSWER = "Rudmoor"
DSPY3_SYSTEMS = [programs.NONE, programs.OURS, programs.REFINE, programs.BESTOFN]


def is_judge(messages) -> bool:
    return "yes/no question" in messages[0]["content"]


def tweet_script(*, hashtag_first: bool):
    """Answers the tweet pipeline: a tweet with a hashtag until a prompt mentions hashtags (feedback or advice)."""

    def respond(messages):
        system, last = messages[0]["content"], messages[-1]["content"]
        if is_judge(messages):
            return {"answer": True}
        if "`advice`" in system or "[[ ## advice ## ]]" in system:
            return {"discussion": "It has a hashtag.", "advice": {"generate_tweet": "Remove hashtags."}}
        if "engaging tweet" in system:
            fixed = not hashtag_first or "hashtag" in last.lower()
            who = re.search(r"person \d+", last).group(0)  # tweets differ between examples
            return {"tweet": f"{who}: {ANSWER} it is!" if fixed else f"{who}: {ANSWER} it is! #trivia"}
        return {"answer": ANSWER}

    return respond


def tweet_examples(n: int = 2) -> list[dict]:
    return [{"id": f"dev-{i}", "question": f"Where was person {i} born?", "answer": ANSWER,
             "context": [f"Person {i} | Person {i} was born in {ANSWER}."]} for i in range(n)]


_contexts = contextlib.ExitStack()


def use_lm(respond, *, cache: bool) -> ScriptedLM:
    """A scripted LM as DSPy's LM (and the package's adapter) until the test ends."""
    lm = ScriptedLM(respond, cache=cache)
    _contexts.enter_context(dspy.context(lm=lm, adapter=AutoAdapter()))
    return lm


@pytest.fixture(autouse=True)
def _restore_settings():
    with _contexts:
        yield


def run_system(system: str, examples: list[dict]) -> list[dict]:
    programs.cold_cache()
    judge = programs.CountingJudge()
    program = programs.build(system, "tweetgen", judge, seed=0)
    return [programs.run_example(program, "tweetgen", ex, judge) for ex in examples]


def total(rows: list[dict], key: str) -> int:
    return sum(r[key] for r in rows)


# ---------------------------------------------------------------- counting (DSPy 3 systems)


@pytest.mark.parametrize("system", DSPY3_SYSTEMS)
def test_every_call_is_counted_judges_included_and_cache_hits_apart(system):
    lm = use_lm(tweet_script(hashtag_first=True), cache=True)
    cached = run_system(system, tweet_examples())
    assert not any(r["error"] for r in cached)
    reached = lm.prompts
    assert total(cached, "lm_calls") == len(reached)  # every call that reached the LM, judges included
    assert total(cached, "judge_calls") == sum(is_judge(p) for p in reached)

    lm = use_lm(tweet_script(hashtag_first=True), cache=False)
    uncached = run_system(system, tweet_examples())
    # Without a cache every call reaches the LM: the cached run's hits were calls too, counted apart.
    assert total(uncached, "cache_hits") == 0
    assert total(uncached, "lm_calls") == len(lm.prompts)
    assert total(uncached, "lm_calls") == total(cached, "lm_calls") + total(cached, "cache_hits")
    assert total(uncached, "judge_calls") == total(cached, "judge_calls") + total(cached, "judge_cache_hits")
    assert all(r["tokens"] > 0 for r in cached)


def test_a_repeated_judge_question_is_a_cache_hit_not_a_call():
    use_lm(tweet_script(hashtag_first=True), cache=True)
    rows = run_system(programs.BESTOFN, tweet_examples(1))
    # BestOfN samples the same hashtag tweet three times: the judges see the same tweet again.
    assert rows[0]["judge_cache_hits"] > 0
    assert rows[0]["cache_hits"] >= rows[0]["judge_cache_hits"]


@pytest.mark.parametrize("system, calls, judge_calls", [
    (programs.NONE, 2, 0), (programs.OURS, 4, 2), (programs.REFINE, 4, 2), (programs.BESTOFN, 4, 2),
])
def test_a_passing_example_costs_its_two_steps_and_two_judge_calls(system, calls, judge_calls):
    use_lm(tweet_script(hashtag_first=False), cache=True)
    rows = run_system(system, tweet_examples(2))
    assert [r["lm_calls"] for r in rows] == [calls, calls]
    assert [r["judge_calls"] for r in rows] == [judge_calls, judge_calls]


def test_each_system_starts_from_a_cold_cache():
    use_lm(tweet_script(hashtag_first=True), cache=True)
    alone = run_system(programs.REFINE, tweet_examples())
    use_lm(tweet_script(hashtag_first=True), cache=True)
    run_system(programs.BESTOFN, tweet_examples())
    after_another = run_system(programs.REFINE, tweet_examples())
    keys = ("lm_calls", "judge_calls", "cache_hits", "judge_cache_hits")
    assert [[r[k] for k in keys] for r in after_another] == [[r[k] for k in keys] for r in alone]


def test_multihop_programs_run_with_the_query_constraints():
    def respond(messages):
        system = messages[0]["content"]
        if "search query" in system:
            return {"query": "same query"}
        return {"answer": ANSWER}

    for system in DSPY3_SYSTEMS:
        use_lm(respond, cache=True)
        programs.cold_cache()
        judge = programs.CountingJudge()
        program = programs.build(system, "multihop", judge, seed=0, retrieve=lambda q: [f"{q} | text"])
        row = programs.run_example(program, "multihop", {"id": "dev-0", "question": "Q?", "answer": ANSWER}, judge)
        assert row["error"] is None, (system, row["error"])
        assert row["judge_calls"] == 0
        assert len(row["outputs"]["queries"]) == 2
        verdicts = peer_tasks.final_verdicts("multihop", row["outputs"], judge=None)
        assert verdicts == {"short_query": True, "new_query": False}  # the second query repeats the first


# ---------------------------------------------------------------- the DSPy 2.5.43 harness's requests


def test_dspy25_requests_carry_the_response_format_the_dspy3_systems_send():
    adapter = SchemaJSONAdapter()
    inputs = {"question": "Q?", "context": ["a", "b"], "answer": ANSWER}
    for signature in (programs.GenerateTweet, programs.GenerateAnswer, programs.GenerateSearchQuery):
        spec = peer_tasks.signature_spec(signature)
        request = peer_dspy25.format_request({"signature": spec, "inputs": inputs, "demos": []})
        assert request["response_format"] == response_format_for(signature)
        assert request["response_format"]["type"] == "json_schema"
        wanted = {k: v for k, v in inputs.items() if k in signature.input_fields}
        assert request["messages"] == adapter.format(signature, [], wanted)


def test_dspy25_retry_requests_get_the_schema_of_the_step_outputs():
    retry = programs.GenerateTweet.append("past_tweet", dspy.InputField(desc="past Tweet with errors"), type_=str)
    retry = retry.append("feedback", dspy.InputField(desc="Some instructions you must satisfy"), type_=str)
    request = peer_dspy25.format_request({"signature": peer_tasks.signature_spec(retry), "demos": [], "inputs": {
        "question": "Q?", "context": ["a"], "answer": ANSWER, "past_tweet": "x #y", "feedback": "No hashtags."}})
    schema = request["response_format"]["json_schema"]["schema"]
    assert schema == response_format_for(retry_signature(programs.GenerateTweet))["json_schema"]["schema"]
    assert "past_tweet: x #y" in request["messages"][-1]["content"]


def test_dspy25_adapter_sends_the_served_request_and_parses_with_its_own_parser():
    served = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "x": 1}}
    asked, sent = [], []

    class FakeJSONAdapter:  # stands in for DSPy 2.5.43's JSONAdapter: only `parse` is used
        def parse(self, signature, completion, _parse_values=True):
            return json.loads(completion)

    def ask(message):
        asked.append(message)
        return served

    def lm(**kwargs):
        sent.append(kwargs)
        return ['{"tweet": "ok"}']

    adapter = dspy25_harness.make_adapter(FakeJSONAdapter, ask)()
    values = adapter(lm, {"temperature": 0.0}, programs.GenerateTweet, [],
                     {"question": "Q?", "context": [], "answer": "A", "_trace": False})
    assert values == [{"tweet": "ok"}]
    assert sent == [{"messages": served["messages"], "response_format": served["response_format"], "temperature": 0.0}]
    assert asked[0]["type"] == "format"
    assert asked[0]["signature"] == peer_tasks.signature_spec(programs.GenerateTweet)
    assert set(asked[0]["inputs"]) == {"question", "context", "answer"}  # no private keys leave the harness


# ---------------------------------------------------------------- checkpoint and resume


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    lm = use_lm(tweet_script(hashtag_first=False), cache=True)
    checkpoint = peers.Checkpoint(tmp_path / "ck.jsonl")
    examples = tweet_examples(3)
    peers.run_dspy3(programs.NONE, "tweetgen", examples[:1], checkpoint, seed=0, log=lambda line: None)
    assert len(lm.prompts) == 2
    lines: list[str] = []
    resumed = peers.Checkpoint(tmp_path / "ck.jsonl")
    peers.run_dspy3(programs.NONE, "tweetgen", examples, resumed, seed=0, log=lines.append)
    assert len(lm.prompts) == 2 + 2 * 2  # only the two examples not in the checkpoint ran
    assert [r["id"] for r in resumed.rows("run", "tweetgen", programs.NONE)] == ["dev-0", "dev-1", "dev-2"]
    assert any("3/3" in line for line in lines)  # progress lines count the examples already done
    fresh = peers.Checkpoint(tmp_path / "ck.jsonl", fresh=True)
    assert fresh.rows("run", "tweetgen", programs.NONE) == []


# ---------------------------------------------------------------- records and RESULTS.md


def synthetic_rows(study: str, table: dict[str, tuple[int, int, float]], n: int = 40) -> list[dict]:
    """Checkpoint rows: system -> (examples passing all constraints, examples of good quality, calls/example)."""
    names = list(peer_tasks.CHECKS[study])
    rows = []
    for system, (passing, good, calls) in table.items():
        for i in range(n):
            ex = f"dev-{i}"
            judge = 2 if system not in (programs.NONE,) and study == "tweetgen" else 0
            rows.append({"kind": "run", "study": study, "system": system, "id": ex, "outputs": {}, "error": None,
                         "lm_calls": calls, "judge_calls": judge, "cache_hits": 1, "judge_cache_hits": 0,
                         "tokens": 100 * calls, "seconds": 1.0})
            verdicts = {name: i < passing for name in names}
            rows.append({"kind": "score", "study": study, "system": system, "id": ex, "verdicts": verdicts,
                         "quality": int(i < good)})
    return rows


TABLE = {
    programs.NONE: (10, 30, 2.0),
    programs.OURS: (30, 28, 6.0),
    programs.REFINE: (29, 27, 9.0),
    programs.BESTOFN: (40, 28, 8.0),
    programs.DSPY25: (12, 26, 5.0),
}


def report_of(rows):
    return peer_report.build_report(rows, seed=0, versions={"dspy": "3.4.1", "dspy 2.5": "2.5.43"})


def test_peers_json_records_carry_every_field():
    report = report_of(synthetic_rows("tweetgen", TABLE))
    assert report["seed"] == 0 and report["versions"]["dspy"] == "3.4.1"
    records = report["records"]
    assert {(r["study"], r["system"]) for r in records} == {("tweetgen", s) for s in TABLE}
    fields = {"study", "system", "n", "all_constraints", "all_constraints_ci", "all_constraints_diff_vs_ours_ci",
              "quality", "quality_ci", "lm_calls_per_example", "judge_calls_per_example", "cache_hits_per_example",
              "tokens_per_example"}
    for r in records:
        assert fields <= set(r), fields - set(r)
        assert r["n"] == 40
        low, high = r["all_constraints_ci"]
        assert low <= r["all_constraints"] <= high
        low, high = r["quality_ci"]
        assert low <= r["quality"] <= high
        if r["system"] == programs.OURS:
            assert r["all_constraints_diff_vs_ours_ci"] is None
        else:
            low, high = r["all_constraints_diff_vs_ours_ci"]
            assert low <= r["all_constraints"] - report_record(report, programs.OURS)["all_constraints"] <= high
    best = report_record(report, programs.BESTOFN)
    assert best["all_constraints"] == 1.0 and best["lm_calls_per_example"] == 8.0
    assert best["judge_calls_per_example"] == 2.0 and best["cache_hits_per_example"] == 1.0
    assert best["tokens_per_example"] == 800.0


def report_record(report, system, study="tweetgen"):
    return next(r for r in report["records"] if r["system"] == system and r["study"] == study)


def test_all_constraints_is_the_share_of_examples_passing_every_one_not_a_mean_of_rates():
    rows = synthetic_rows("multihop", {programs.OURS: (0, 0, 3.0)}, n=10)
    for row in rows:
        if row["kind"] == "score":  # half the examples fail one constraint, half the other
            i = int(row["id"].split("-")[1])
            row["verdicts"] = {"short_query": i % 2 == 0, "new_query": i % 2 == 1}
    record = report_record(report_of(rows), programs.OURS, study="multihop")
    assert record["constraints"]["short_query"]["rate"] == 0.5
    assert record["all_constraints"] == 0.0


def test_results_text_says_who_wins_and_who_loses_from_the_numbers():
    text = peer_report.results_markdown(report_of(synthetic_rows("tweetgen", TABLE)))
    assert re.search(r"loses to dspy\.BestOfN \(N=3\) by 25 points", text)
    assert re.search(r"wins against DSPy 2\.5\.43 Suggest by 45 points", text)
    assert re.search(r"ties with dspy\.Refine \(N=3\)", text)  # 30 vs 29 of 40: noise
    assert "fewer LM calls per example than dspy.BestOfN (N=3)" in text
    assert "more LM calls per example than DSPy 2.5.43 Suggest" in text
    assert "Reading these numbers" not in text  # no hand-written prose survives
    flipped = dict(TABLE)
    flipped[programs.OURS], flipped[programs.BESTOFN] = TABLE[programs.BESTOFN], TABLE[programs.OURS]
    text = peer_report.results_markdown(report_of(synthetic_rows("tweetgen", flipped)))
    assert re.search(r"wins against dspy\.BestOfN \(N=3\) by 25 points", text)


def test_results_text_states_the_goal_and_by_how_much_it_is_missed():
    text = peer_report.results_markdown(report_of(synthetic_rows("tweetgen", TABLE)))
    goal = text[text.index("Goal"):]
    assert "missed" in goal
    assert "DSPy 2.5.43 Suggest makes fewer LM calls" in goal


def test_results_text_says_what_the_examples_lost_to_a_better_system_cost_here():
    # multihop: ours fails new_query on 10 of 40 examples and spends 5 calls on each; 3 on the others
    table = {programs.NONE: (10, 2, 3.0), programs.OURS: (30, 2, 3.0), programs.REFINE: (20, 2, 3.0),
             programs.BESTOFN: (40, 2, 4.0), programs.DSPY25: (20, 2, 4.0)}
    rows = synthetic_rows("multihop", table)
    for row in rows:
        if row["system"] == programs.OURS and int(row["id"].split("-")[1]) >= 30:
            if row["kind"] == "score":
                row["verdicts"] = {"short_query": True, "new_query": False}
            else:
                row["lm_calls"] = 5
    report = report_of(rows)
    new_query = report_record(report, programs.OURS, "multihop")["constraints"]["new_query"]
    assert new_query["failing"] == 10 and new_query["lm_calls_when_failing"] == 5.0
    text = peer_report.results_markdown(report)
    assert ("On the 10 examples whose final output fails `new_query` here, this package made 5.00 LM calls "
            "per example (3.50 over all examples, at most 5 on one): its retries were spent and the retried "
            "step still failed.") in text
    assert "dspy.BestOfN (N=3) re-runs the whole program" in text


def test_a_missed_interval_condition_says_what_difference_would_meet_it():
    report = report_of(synthetic_rows("tweetgen", TABLE))  # quality 28 vs 30 of 40: -5 points, a wide interval
    part = report["goal"]["tweetgen"]["quality_vs_no_assertions"]
    assert not part["met"]
    width = (part["diff"] - part["ci"][0]) * 100
    text = peer_report.results_markdown(report)
    assert (f"at n = 40 the interval's low end lies {width:.1f} points below the measured difference, so only a "
            f"measured difference of about {width - 5:+.1f} points or more would meet it") in text


def test_report_only_writes_json_markdown_and_chart_from_the_checkpoint(tmp_path):
    checkpoint = peers.Checkpoint(tmp_path / "ck.jsonl")
    checkpoint.append({"kind": "config", "seed": 0})
    for row in synthetic_rows("tweetgen", TABLE, n=8):
        checkpoint.append(row)
    peers.main(["--report-only", "--checkpoint", str(tmp_path / "ck.jsonl"), "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "peers.json").read_text())
    assert len(data["records"]) == len(TABLE) and data["seed"] == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## tweetgen" in text and "n = 8" in text
    assert (tmp_path / "peers.png").stat().st_size > 0


def test_results_md_keeps_other_benches_sections_and_drops_the_old_hand_written_report():
    other = "<!-- optimizers:begin -->\n## GEPA vs Bootstrap\nnumbers\n<!-- optimizers:end -->"
    old = "# Peer benchmark\n\n## Reading these numbers\n\nHand-written prose.\n\n" + other + "\n"
    section = peer_report.results_markdown(report_of(synthetic_rows("tweetgen", TABLE, n=8)))
    text = peer_report.replace_section(old, section)
    assert "Hand-written prose" not in text and other in text and section in text
    again = peer_report.replace_section(text, section.replace("n = 8", "n = 9"))
    assert again.count(peer_report.BEGIN) == 1 and "n = 9" in again and other in again


def test_a_small_run_of_every_dspy3_system_end_to_end(tmp_path, monkeypatch):
    def respond(messages):
        system, last = messages[0]["content"], messages[-1]["content"]
        if is_judge(messages):
            return {"answer": "engaging" in last}
        if "`advice`" in system or "[[ ## advice ## ]]" in system:
            return {"discussion": "d", "advice": {"generate_tweet": "Be faithful."}}
        if "engaging tweet" in system:
            answer = re.search(r"answer ## \]\]\n(.*)", last).group(1)
            return {"tweet": f"It is {answer}!"}
        if "search query" in system:
            return {"query": "who" if "earlier_queries ## ]]\n[]" in last else "who else"}
        return {"answer": ANSWER}

    import lmassert_magic.lm

    monkeypatch.setattr(lmassert_magic.lm, "configure_lm", lambda spec: use_lm(respond, cache=True))
    args = ["--n", "2", "--systems", "none,ours,refine,bestofn", "--checkpoint", str(tmp_path / "ck.jsonl"),
            "--out-dir", str(tmp_path)]
    peers.main(args)
    data = json.loads((tmp_path / "peers.json").read_text())
    assert data["studies"] == ["tweetgen", "multihop"]
    assert {(r["study"], r["n"]) for r in data["records"]} == {("tweetgen", 2), ("multihop", 2)}
    assert all(r["errors"] == 0 for r in data["records"])
    rows = peers.Checkpoint(tmp_path / "ck.jsonl").rows("score", "multihop", programs.NONE)
    assert [r["verdicts"] for r in rows] == [{"short_query": True, "new_query": True}] * 2
    assert "### multihop (n = 2)" in (tmp_path / "RESULTS.md").read_text()
    lines = (tmp_path / "ck.jsonl").read_text().splitlines()
    peers.main(args)  # everything is in the checkpoint: nothing runs again
    assert (tmp_path / "ck.jsonl").read_text().splitlines() == lines


def test_quality_needs_no_judge():
    assert peers.quality("tweetgen", {"answer": ANSWER}, {"tweet": f"It is {ANSWER}."}) == 1
    assert peers.quality("tweetgen", {"answer": ANSWER}, {"tweet": f"It is {ANSWER}." + "x" * 280}) == 0
    assert peers.quality("multihop", {"answer": ANSWER}, {"answer": "rudmoor"}) == 1
    assert peers.quality("multihop", {"answer": ANSWER}, None) == 0  # an example that raised


# ---------------------------------------------------------------- the real DSPy 2.5.43 harness (slow)


class FakeChatServer:
    """An OpenAI-compatible chat endpoint on a loopback port: `reply(body) -> dict` becomes the JSON content."""

    def __init__(self, reply):
        self.reply, self.bodies = reply, []

    def __enter__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append(body)
                content = json.dumps(owner.reply(body))
                out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}],
                                  "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dspy25_venv():
    """The DSPy 2.5.43 venv's python; the test is skipped on a machine without one."""
    venv = peer_dspy25.find_venv()
    if venv is None:
        pytest.skip("no DSPy 2.5.43 venv on this machine (bench/_venv25 or $LMASSERT_DSPY25_VENV)")
    return venv


@pytest.mark.slow
def test_dspy25_harness_counts_like_the_others_against_a_fake_server(tmp_path, dspy25_venv):
    venv = dspy25_venv

    def reply(body):
        keys = list(body["response_format"]["json_schema"]["schema"]["properties"])
        text = json.dumps(body["messages"])
        if keys == ["tweet"]:
            return {"tweet": f"{ANSWER}!" if "hashtag" in text.lower() else f"{ANSWER}! #trivia"}
        return {keys[0]: ANSWER}

    lm = use_lm(tweet_script(hashtag_first=False), cache=True)  # the main process's judge
    with FakeChatServer(reply) as server:
        checkpoint = peers.Checkpoint(tmp_path / "ck.jsonl")
        peer_dspy25.run_dspy25("tweetgen", tweet_examples(2), checkpoint, url=server.url, python=venv,
                               log=lambda line: None)
    rows = checkpoint.rows("run", "tweetgen", programs.DSPY25)
    assert [r["error"] for r in rows] == [None, None]
    assert all(body["response_format"]["type"] == "json_schema" for body in server.bodies)
    judge_prompts = sum(is_judge(p) for p in lm.prompts)
    assert total(rows, "lm_calls") == len(server.bodies) + judge_prompts
    assert total(rows, "judge_calls") == judge_prompts
    assert total(rows, "cache_hits") > 0  # 2.5 re-runs the whole forward: the answer step hits its cache
    assert all(r["outputs"]["tweet"] == f"{ANSWER}!" for r in rows)


@pytest.mark.slow
def test_dspy25_harness_runs_multihop_with_served_retrieval_against_a_fake_server(tmp_path, dspy25_venv):
    venv = dspy25_venv

    def reply(body):
        keys = list(body["response_format"]["json_schema"]["schema"]["properties"])
        text = json.dumps(body["messages"])
        if keys == ["query"]:
            return {"query": "other query" if "distinct from" in text else "first query"}
        return {"answer": ANSWER}

    searched = []

    def retrieve(query):
        searched.append(query)
        return [f"{query} | passage"]

    with FakeChatServer(reply) as server:
        checkpoint = peers.Checkpoint(tmp_path / "ck.jsonl")
        peer_dspy25.run_dspy25("multihop", [{"id": "dev-0", "question": "Q?", "answer": ANSWER}], checkpoint,
                               url=server.url, python=venv, log=lambda line: None, retrieve=retrieve)
    (row,) = checkpoint.rows("run", "multihop", programs.DSPY25)
    assert row["error"] is None
    assert row["outputs"]["queries"] == ["first query", "other query"]  # the repeated query was retried
    assert "other query" in searched
    assert row["lm_calls"] == len(server.bodies) and row["judge_calls"] == 0
    assert row["cache_hits"] > 0  # the retry re-runs the first hop, which its cache answers


def test_a_study_whose_systems_have_not_all_run_the_same_examples_is_shown_as_in_progress():
    # an interrupted full run: multihop has this package on 40 examples and no assertions on 20
    rows = synthetic_rows("tweetgen", TABLE)
    rows += synthetic_rows("multihop", {programs.OURS: (10, 10, 4.0)}, n=40)
    rows += synthetic_rows("multihop", {programs.NONE: (5, 5, 2.0)}, n=20)
    report = report_of(rows)
    assert report["studies"] == ["tweetgen"]
    assert {r["study"] for r in report["records"]} == {"tweetgen"} and "multihop" not in report["goal"]
    assert report["in_progress"] == {"multihop": {programs.NONE: 20, programs.OURS: 40, programs.REFINE: 0,
                                                  programs.BESTOFN: 0, programs.DSPY25: 0}}
    text = peer_report.results_markdown(report)
    assert "### multihop: run in progress" in text
    assert f"{programs.OURS}: 40" in text and f"{programs.DSPY25}: 0" in text


def test_a_system_that_raised_is_not_picked_for_its_few_calls_and_its_errors_are_named():
    # dspy.Refine raised on most examples of the full run: an early end, not an economy
    rows = synthetic_rows("tweetgen", {**TABLE, programs.REFINE: (3, 3, 4.0)})
    for row in rows:
        if row["kind"] == "run" and row["system"] == programs.REFINE and int(row["id"].split("-")[1]) < 30:
            row["error"] = "AdapterParseError: ..."
    text = peer_report.results_markdown(report_of(rows))
    picks = text.split("#### What to pick")[1]
    assert f"LM calls are what matters and the constraints must still be checked: **{programs.DSPY25}**" in picks
    assert f"{programs.REFINE} makes fewer LM calls (4.00 against 6.00" in text
    assert "it raised on 30 of 40 examples" in text.split("#### Goal")[1]
