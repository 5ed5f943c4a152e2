"""Untrusted LM text and secrets: injection payloads through a real `%%compile`, API keys never shown.

1. Payloads: the scripted LM answers with HTML/JS injection payloads (the report tests' 32 plus
   payloads aimed at the report's own markup and at the chat format), so they flow through the
   adapter, the constraints (feedback f-strings quote them), counterexamples, demos, hard-assertion
   errors and LM errors into the report. Every HTML view (static report, widget pages) must be inert
   and show the text escaped; `test_real_compile_payloads_inert_in_chromium` loads them in Chromium.
2. Secrets: fake keys in the environment, remote LMs configured with `%lm` (hosted ids, and an
   OpenAI-compatible server that is a fake on 127.0.0.1 which echoes the key in its 401 errors like
   real providers do), then compile / report / export / save / `%lm` display / `%lmassert show`, in
   process and in a real kernel (nbclient): every artifact and every captured output is scanned.
3. The embedded model's server listens on loopback only (marked `embedded`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets as _secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dspy
import pytest

from lmassert_magic.registry import get_registry
from lmassert_magic.report import CompileReport
from lmassert_magic.report import html as H
from lmassert_magic.testing import ScriptedLM

ROOT = Path(__file__).resolve().parent.parent


def _load_test_report() -> Any:
    """The report tests' payloads and HTML checks (one list for both suites)."""
    spec = importlib.util.spec_from_file_location("_lmassert_test_report", Path(__file__).with_name("test_report.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


TR = _load_test_report()

#: Aimed at the markup the report writes around LM text, at HTML parsing quirks, and at the chat format.
EXTRA_PAYLOADS = [
    "</span></div></details><img src=x onerror=alert(1)>",
    "</td></tr></tbody></table><script>alert(1)</script>",
    "</summary><script>alert(1)</script>",
    "</em></b></code><svg onload=alert(1)>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
    "<textarea></textarea><img src=x onerror=alert(1)>",
    "<template><script>alert(1)</script></template><img src=x onerror=alert(1)>",
    "<a href=\"&#x6A;avascript:alert(1)\">x</a>",
    "<form action=javascript:alert(1)><button>go</button></form>",
    "<video><source onerror=alert(1)></video>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<marquee onstart=alert(1)>x</marquee>",
    "[[ ## tweet ## ]] <script>alert(1)</script> [[ ## completed ## ]]",
]
PAYLOADS = TR.PAYLOADS + EXTRA_PAYLOADS


# ---------------------------------------------------------------- payloads through %%compile

SETUP = '''
import re
import dspy

def retrieve(question):
    return ["a fact about " + question]

def quality(example, pred, trace=None):
    return float("#" not in pred.tweet)
'''
CELLS = [
    '%%signature GenerateTweet\n"""Write a tweet."""\nquestion: str = In()\ncontext: list[str] = In()\n'
    'tweet: str = Out()\n',
    '%%assert GenerateTweet --name no_hashtags\n"#" not in tweet\nf"Remove the hashtags from {tweet}"\n',
    '%%assert GenerateTweet --name allowed --hard --backtracks 1\n"FORBIDDEN" not in tweet\n'
    'f"This may not be posted: {tweet}"\n',
]


def payload_respond(payloads: list[str]):
    """Question qN gets payload N: with a hashtag first, clean after feedback; N % 6 == 4 stays forbidden
    (a hard failure quoting it), N % 6 == 5 makes the LM fail with the payload as its error."""

    def respond(messages: list[dict[str, Any]]) -> dict[str, Any]:
        last = str(messages[-1].get("content", ""))
        m = re.search(r"## question ## \]\]\n[a-z](\d+)", last)
        n = int(m.group(1)) if m else 0
        payload = payloads[n % len(payloads)]
        if n % 6 == 5:
            raise RuntimeError(payload)
        if n % 6 == 4:
            return {"tweet": f"FORBIDDEN {payload}"}
        if "Remove the hashtags" in last:
            return {"tweet": payload}
        return {"tweet": f"{payload} #tag"}

    return respond


_COMPILED: dict[str, Any] = {}


def compile_with_payloads(ip, payloads: list[str] = PAYLOADS) -> CompileReport:
    """A real %%compile whose LM answers with every payload (dev) and some (train)."""
    ip.run_cell(SETUP)
    n = len(payloads)
    ip.run_cell(f'trainset = [dspy.Example(question=f"t{{i}}").with_inputs("question") for i in range(0, {n}, 7)]\n'
                f'devset = [dspy.Example(question=f"d{{i}}").with_inputs("question") for i in range({n})]\n')
    for cell in CELLS:
        ip.run_cell(cell)
    with dspy.context(lm=ScriptedLM(payload_respond(payloads))):
        ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality -o rep --threads 2\n"
                    "retrieve >> GenerateTweet\n")
    return ip.user_ns["rep"]


def lm_strings(report: CompileReport) -> list[str]:
    """Every string of LM origin the report shows: counterexamples, failure causes, demos."""
    out: list[str] = []
    result = report.result
    out += [e.error for _, e in H.failed_examples(result)]
    for _, c in result.all_counterexamples():
        out += [H.to_text(v) for v in c.failing_outputs.values()] + [c.feedback]
        out += [H.to_text(v) for v in (c.fixed_outputs or {}).values()]
    for per_predictor in result.demos.values():
        for demos in per_predictor.values():
            out += [H.to_text(v) for d in demos for k, v in d.items() if k != "augmented"]
    return [s for s in out if s.strip()]


def widget_fragments(report: CompileReport) -> list[str]:
    """Every HTML fragment the widget can show: each page of each pager under each filter value."""
    w = report.widget()
    seen = list(TR.widget_html_values(w))
    for pager in (w.cx_pager, w.demo_pager, w.failures_pager):
        for page in range(pager.pages):
            pager.go(page)
            seen.append(pager.body.value)
    for name in [v for _, v in w.constraint_filter.options]:
        w.constraint_filter.value = name
        seen += TR.widget_html_values(w)
    for value in [v for _, v in w.demo_filter.options]:
        w.demo_filter.value = value
        seen += TR.widget_html_values(w)
    return seen


def test_payloads_from_a_real_compile_stay_text(ip):
    report = compile_with_payloads(ip)
    result = report.result
    # they really flowed through: counterexample cards, feedback, fixed outputs, failure causes, demos
    cx = result.all_counterexamples()
    assert sum(any(p in c.failing_outputs["tweet"] for p in PAYLOADS) for _, c in cx) >= len(PAYLOADS)
    assert sum(any(p in c.feedback for p in PAYLOADS) for _, c in cx) >= len(PAYLOADS)
    assert any(c.fixed and any(p in c.fixed_outputs["tweet"] for p in PAYLOADS) for _, c in cx)
    causes = [e.error for _, e in H.failed_examples(result)]
    assert any("DSPyAssertionError" in c and "FORBIDDEN <" in c for c in causes)  # a hard failure quoting it
    assert sum(any(p.strip() in c for p in PAYLOADS) for c in causes if "LMUnexpectedError" in c) >= 5
    assert any("<" in str(v) for demos in result.demos["compile_assert"].values() for d in demos for v in d.values())
    survived = [p for p in PAYLOADS if any(p in s for s in lm_strings(report))]
    assert len(survived) >= len(PAYLOADS) - 2, set(PAYLOADS) - set(survived)  # the adapter may trim a few

    # every view is inert: the report as displayed, the report with every row, every widget page
    full = CompileReport(result, row_limit=10_000).html()
    fragments = [report.html(), full, *widget_fragments(report)]
    for fragment in fragments:
        TR.assert_inert(fragment)
    # and shows each LM string as text (escaped in the markup, readable on screen)
    shown = TR.visible_text(full)
    for text in lm_strings(report):
        for line in H.clean(text).splitlines():
            if line.strip():
                assert line.strip()[:200] in shown, line[:200]
    widget_text = "".join(TR.visible_text(f) for f in fragments[2:])
    for p in survived:
        assert H.clean(p).strip()[:100] in widget_text, p
    assert "<script>" in shown and "<script>" not in full  # visible as text, never as a tag


@pytest.mark.browser
def test_real_compile_payloads_inert_in_chromium(ip):
    """The payloads of a real %%compile, as static HTML and as widget fragments (innerHTML, like the
    ipywidgets HTML view), run nothing in Chromium; a raw control payload does run."""
    tb_spec = importlib.util.spec_from_file_location("_lmassert_test_browser", Path(__file__).with_name(
        "test_browser.py"))
    tb = importlib.util.module_from_spec(tb_spec)
    assert tb_spec.loader is not None
    tb_spec.loader.exec_module(tb)
    tb._need_browser()
    from playwright.sync_api import sync_playwright

    payloads = [p.replace("alert(1)", "window.__xss=1") for p in PAYLOADS]
    report = compile_with_payloads(ip, payloads)
    static = CompileReport(report.result, row_limit=10_000).html()
    fragments = widget_fragments(report)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_content(f"<html><body><div id='static'>{static}</div><div id='w'></div></body></html>")
            page.evaluate("(fs) => { const d = document.getElementById('w'); for (const f of fs) {"
                          " const e = document.createElement('div'); e.innerHTML = f; d.appendChild(e); } }",
                          fragments)
            page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
            page.evaluate("() => { const e = document.createElement('div'); e.innerHTML ="
                          " '<img src=x onerror=\"window.__control=1\">'; document.body.appendChild(e); }")
            page.wait_for_function("() => window.__control === 1", timeout=10_000)
            page.wait_for_timeout(500)
            assert page.evaluate("() => window.__xss") is None
            assert not dialogs
            hostile = "img, script, iframe, object, a, form, video, svg animate, marquee, textarea, template, noscript"
            assert page.locator(f"#static :is({hostile}), #w :is({hostile})").count() == 0
            body = page.inner_text("#static")
            assert "window.__xss=1" in body and "<script>" in body
        finally:
            browser.close()


def test_lone_surrogates_from_the_lm_do_not_break_the_displayed_report(ip):
    """Half an emoji (a JSON escape cut in two) is a str Python holds but UTF-8 cannot encode: the kernel's
    message packer would refuse the report, and the notebook could not be saved with it."""
    from jupyter_client.session import json_packer

    def respond(messages: list[dict[str, Any]]) -> dict[str, Any]:
        fixed = "Remove the hashtags" in str(messages[-1].get("content", ""))
        return {"tweet": "fixed \udc00 tweet" if fixed else "half an emoji \ud83d #tag"}

    ip.run_cell(SETUP + 'trainset = [dspy.Example(question="t0").with_inputs("question")]\n'
                'devset = [dspy.Example(question="d0").with_inputs("question")]\n')
    for cell in CELLS[:2]:
        ip.run_cell(cell)
    with dspy.context(lm=ScriptedLM(respond)):
        ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality -o rep\n"
                    "retrieve >> GenerateTweet\n")
    report = ip.user_ns["rep"]
    assert any("\ud83d" in c.failing_outputs["tweet"] for _, c in report.result.all_counterexamples())
    json_packer({"data": report._repr_mimebundle_(), "widget": widget_fragments(report)})  # what a kernel sends
    shown = TR.visible_text(CompileReport(report.result, row_limit=1000).html())
    assert "half an emoji \\ud83d #tag" in shown and "fixed \\udc00 tweet" in shown


# ---------------------------------------------------------------- secrets

KEY_NAMES = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LMASSERT_API_KEY", "HF_TOKEN", "MY_SERVICE_TOKEN"]


@pytest.fixture
def fake_keys(monkeypatch) -> dict[str, str]:
    """Fresh fake keys in the environment (random, so a match can only come from this test)."""
    keys = {
        "OPENAI_API_KEY": "sk-test-" + _secrets.token_hex(16),
        "ANTHROPIC_API_KEY": "sk-ant-test-" + _secrets.token_hex(16),
        "LMASSERT_API_KEY": "lmk-test-" + _secrets.token_hex(12),
        "HF_TOKEN": "hf_test" + _secrets.token_hex(15),
        "MY_SERVICE_TOKEN": "svc-test-" + _secrets.token_hex(12),
    }
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    return keys


class FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint answering like the scripted LMs; questions listed in `UNAUTHORIZED`
    get a 401 that quotes the key it was sent, as real providers' 'Incorrect API key provided' errors do."""

    formatter = ScriptedLM(lambda m: {})
    seen_keys: list[str] = []
    UNAUTHORIZED = re.compile(r"^(d1|d5|t2|bad\d+)$")

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        type(self).seen_keys.append(key)
        last = str(body["messages"][-1]["content"])
        m = re.search(r"## question ## \]\]\n(\S+)", last)
        q = m.group(1) if m else "?"
        if self.UNAUTHORIZED.match(q):
            self._send(401, {"error": {"message": f"Incorrect API key provided: {key}. You can find your API key "
                                                  "at https://example.invalid/keys", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}})
            return
        fields = {"tweet": f"A clean tweet about {q}."} if "remove hashtag" in last else {"tweet": f"About {q} #wow"}
        if "yes/no question" in str(body["messages"][0]["content"]):
            fields = {"answer": True}
        text = self.formatter._format_answer_fields(fields)
        self._send(200, {"id": "fake", "object": "chat.completion", "created": 0, "model": body.get("model", "x"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server() -> Iterator[str]:
    """The fake provider on a free loopback port; shut down when the test ends."""
    FakeOpenAI.seen_keys = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


SECRET_SETUP = '''
import re
import dspy

def retrieve(question):
    return ["a fact about " + question]

def quality(example, pred, trace=None):
    return float("#" not in pred.tweet)

SERVICE_TOKEN = __import__("os").environ["MY_SERVICE_TOKEN"]

def signed(question):
    """A notebook helper that holds a key (say, for a search service)."""
    return {"context": ["a fact about " + question], "auth": len(SERVICE_TOKEN) > 0}

trainset = [dspy.Example(question=f"t{i}").with_inputs("question") for i in range(4)]
devset = [dspy.Example(question=f"d{i}").with_inputs("question") for i in range(6)]
badset = [dspy.Example(question=f"bad{i}").with_inputs("question") for i in range(3)]
'''
SECRET_CELLS = [
    '%%signature GenerateTweet\n"""Write a tweet."""\nquestion: str = In()\ncontext: list[str] = In()\n'
    'tweet: str = Out()\n',
    '%%assert GenerateTweet --name no_hashtags\nnot re.search(r"#\\w+", tweet)\n"Please remove hashtag phrases."\n',
    '%%assert GenerateTweet --name engaging\nlm_judge("Is it engaging?", tweet=tweet)\n"Be engaging."\n',
]


def scan(artifacts: dict[str, str], keys: dict[str, str]) -> list[str]:
    leaks = []
    for where, text in artifacts.items():
        for name, value in keys.items():
            for piece in (value, value[-16:]):  # the whole key, or a tail long enough to identify it
                if piece in text:
                    i = text.index(piece)
                    leaks.append(f"{name} in {where}: ...{text[max(0, i - 80):i + len(piece) + 10]!r}")
                    break
    return leaks


def test_keys_never_appear_in_reports_exports_saved_json_or_outputs(ip, fake_keys, fake_server, tmp_path, capfd):
    artifacts: dict[str, str] = {}
    ip.run_cell("%lm openai/gpt-4o-mini")
    ip.run_cell("%lm anthropic/claude-3-5-haiku-latest --temperature 0.2")
    ip.run_cell("%lm")
    ip.run_cell(f"%lm gpt-4o-mini --api-base {fake_server} --no-cache")
    assert dspy.settings.lm.kwargs["api_key"] == fake_keys["LMASSERT_API_KEY"]  # the key is really in use
    ip.run_cell("%lm")
    from lmassert_magic.lm import describe_lm

    artifacts["describe_lm"] = describe_lm()
    ip.run_cell(SECRET_SETUP)
    for cell in SECRET_CELLS:
        ip.run_cell(cell)
    ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality -o rep\nsigned >> GenerateTweet\n")
    assert FakeOpenAI.seen_keys and set(FakeOpenAI.seen_keys) == {fake_keys["LMASSERT_API_KEY"]}
    report = ip.user_ns["rep"]
    errors = [e.error for _, e in H.failed_examples(report.result)]
    assert any("Incorrect API key provided" in e for e in errors)  # the provider did quote the key
    bundle, _ = ip.display_formatter.format(report)
    artifacts.update({
        "report text": report.text(), "report html": report.html(), "display bundle": json.dumps(bundle),
        "report widget": "".join(widget_fragments(report)),
        "report tables": "\n".join(df.to_string() + df.to_html() + df.to_json(default_handler=str)
                                   for df in report.tables.values()),
        "repr": repr(report),
    })
    # every example failing with the echoed key: the cell's error message
    with pytest.raises(Exception) as info:
        ip.run_cell("%%compile failing --train trainset --dev badset --metric quality --settings vanilla\n"
                    "signed >> GenerateTweet\n")
    artifacts["all-failed error"] = f"{type(info.value).__name__}: {info.value}"
    assert "Incorrect API key provided" in artifacts["all-failed error"]
    ip.run_cell("%lmassert show tweeter")
    ip.run_cell("%lmassert list")
    ip.run_cell(f"%lmassert export tweeter {tmp_path / 'export'}")
    ip.run_cell(f"tweeter.save({str(tmp_path / 'saved.json')!r})")
    for path in sorted((tmp_path / "export").iterdir()) + [tmp_path / "saved.json"]:
        artifacts[f"file {path.name}"] = path.read_text()
    artifacts["registry snapshot"] = get_registry().snapshot_json()
    out, err = capfd.readouterr()
    artifacts["stdout"], artifacts["stderr"] = out, err
    leaks = scan(artifacts, fake_keys)
    assert not leaks, "\n".join(leaks)
    # the export passes the helper's key in instead of writing it, and still runs
    exported = artifacts["file tweeter.py"]
    assert "SERVICE_TOKEN" in exported and "REQUIRED = ('SERVICE_TOKEN',)" in exported
    assert "[REDACTED]" in artifacts["report text"] and "[REDACTED]" in artifacts["report html"]


def test_scan_finds_a_key_when_there_is_one(fake_keys):
    """The scan itself can fail: a key (or its tail) in any artifact is reported."""
    key = fake_keys["OPENAI_API_KEY"]
    assert scan({"x": f"error: {key}"}, fake_keys) and scan({"y": f"...{key[-20:]}"}, fake_keys)
    assert not scan({"z": "nothing here"}, fake_keys)


def test_keys_never_appear_in_a_real_notebooks_outputs(fake_keys, fake_server, tmp_path, monkeypatch):
    """The same flow in a real kernel (nbclient): the saved .ipynb (all outputs, widget state) holds no key."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    export = tmp_path / "export"
    sources = [
        "%load_ext lmassert_magic",
        "%lm openai/gpt-4o-mini",
        "%lm",
        f"%lm gpt-4o-mini --api-base {fake_server} --no-cache",
        "%lm",
        SECRET_SETUP,
        *SECRET_CELLS,
        "%%compile tweeter --train trainset --dev devset --metric quality -o rep\nsigned >> GenerateTweet\n",
        "rep",
        "rep.tables['failures']",
        "rep.widget()",
        "%%compile failing --train trainset --dev badset --metric quality --settings vanilla\n"
        "signed >> GenerateTweet\n",
        f"%lmassert export tweeter {export}",
        f"tweeter.save({str(tmp_path / 'saved.json')!r})",
        "%lmassert show tweeter",
        "from lmassert_magic.registry import get_registry\nprint(get_registry().snapshot_json())",
        "from lmassert_magic.lm import describe_lm\ndescribe_lm()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True, store_widget_state=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "CompileFailed", [e.get("evalue") for e in errors]
    assert "Incorrect API key provided: [REDACTED]" in errors[0]["evalue"]
    text = json.dumps([o for o in outputs])
    assert "LM Assertions report" in text and "Incorrect API key provided" in text
    artifacts = {"executed notebook": path.read_text()}
    for file in sorted(export.iterdir()) + [tmp_path / "saved.json"]:
        artifacts[f"file {file.name}"] = file.read_text()
    leaks = scan(artifacts, fake_keys)
    assert not leaks, "\n".join(leaks)


# ---------------------------------------------------------------- the embedded server is loopback-only


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket on the machine (/proc/net/tcp, tcp6)."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], int(cols[9])
            if state != "0A":  # LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            if width == 8:
                address = ".".join(str(b) for b in raw[::-1])
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                import ipaddress

                address = str(ipaddress.IPv6Address(words))
            found[inode] = (address, int(hex_port, 16))
    return found


def _my_socket_inodes() -> set[int]:
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.mark.embedded
def test_embedded_server_listens_on_loopback_only():
    from lmassert_magic.lm import get_local_server, local_model_available

    if not local_model_available():
        pytest.skip("the embedded model's weights or runtime are not installed")
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc to read listening sockets")
    before = {i for i in _my_socket_inodes() if i in _listening_inodes()}
    server = get_local_server()
    listening = _listening_inodes()
    mine = {i: listening[i] for i in _my_socket_inodes() if i in listening}
    on_port = {i: a for i, a in mine.items() if a[1] == server.port}
    assert on_port, f"no listening socket of this process on the server's port {server.port}: {mine}"
    for address, port in on_port.values():
        assert _is_loopback(address), f"the embedded server listens on {address}:{port}"
    # nothing else this process started listening on for the server is reachable from outside either
    for inode, (address, port) in mine.items():
        if inode not in before:
            assert _is_loopback(address), f"a new listening socket on {address}:{port}"
    assert _is_loopback(re.sub(r"^https?://|:\d+/?$", "", server.address).strip("[]"))


def test_loopback_check_can_fail():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::") and not _is_loopback("192.168.1.5")
