"""The report in a real browser: JupyterLab + Debian's Chromium driven by Playwright.

1. `test_report_in_jupyterlab`: starts JupyterLab on 127.0.0.1 (free port, token, temp dir), opens
   tests/browser/report_demo.ipynb in Chromium, runs all cells, then checks in the DOM that the
   report *widget* rendered its pass-rate table and chart, that the constraint Dropdown filters
   counterexamples, that an XSS payload in every LM output stayed text and ran nothing, and that the
   notebook's deliberately unescaped control payload did run (so this check can fail). Screenshots
   go to build/browser/.
2. `test_static_html_payloads_inert_in_chromium`: every injection payload of test_report.py, placed
   everywhere in a result, loaded as the static HTML and as the widget's HTML fragments (injected
   with innerHTML, as the ipywidgets HTML view does), runs nothing in Chromium.

Skipped (with the reason) only when chromium, JupyterLab or Playwright is missing; CI installs all three.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = Path(__file__).resolve().parent / "browser" / "report_demo.ipynb"
SHOTS = ROOT / "build" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _need_browser() -> None:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium chromium-driver)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the python playwright package is not installed (pip install playwright)")


def _need_jupyterlab() -> None:
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("jupyterlab is not installed (pip install jupyterlab)")


@pytest.fixture
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A JupyterLab server of our own on 127.0.0.1, serving a temp dir holding the test notebook."""
    _need_jupyterlab()
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    port, token = _free_port(), os.urandom(16).hex()
    env = dict(os.environ)
    env.update({
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        "LMASSERT_WIDGETS": "1",
    })
    # no "get Jupyter news?" toast over the screenshots, and no update check (no network here)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115 - closed in the finally below
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI and these machines run as root
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(tmp_path / 'jupyterlab.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()}")
            time.sleep(0.3)
        yield {"base": base, "token": token, "log": tmp_path / "jupyterlab.log"}
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session above)
            proc.wait(timeout=10)
        log.close()


def _code_cells(path: Path) -> int:
    return sum(1 for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def _shoot(page: Any, element: Any, path: Path) -> None:
    """A viewport screenshot with the element's top at the top (element shots of tall outputs are unreadable)."""
    element.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(200)
    page.screenshot(path=str(path))


def test_report_in_jupyterlab(browser: Any, jupyterlab: dict[str, Any]) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{jupyterlab['base']}/lab/tree/{NOTEBOOK.name}?token={jupyterlab['token']}")
    page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-NotebookPanel')", timeout=90_000)
    # wait until the kernel is ready, then run every cell the way the Run menu does
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   return w && w.sessionContext && w.sessionContext.session
                          && w.sessionContext.session.kernel
                          && w.sessionContext.session.kernel.connectionStatus === 'connected'; }""",
        timeout=90_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    n_code = _code_cells(NOTEBOOK)
    try:
        page.wait_for_function(
            """(n) => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                        return p.length === n && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
            arg=n_code, timeout=180_000,
        )
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "report-timeout.png"), full_page=True)
        raise
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, tracebacks

    # the report is the widget view (not the static fallback), with its pass-rate table and chart
    report = page.locator(".lmassert-report-widget")
    report.wait_for(state="visible", timeout=30_000)
    assert report.count() == 1
    table = report.locator("table.lmassert-passrates")
    assert table.is_visible()
    assert table.locator("tbody tr").count() == 5
    assert "no_hashtags" in table.inner_text() and "hard · Assert" in table.inner_text()
    # every rate carries its 95% interval and n (8 dev examples; Vanilla: 0 of 8 without hashtags)
    assert "(95% CI 0-32%, n=8)" in table.inner_text() and "all constraints" in table.inner_text()
    chart = report.locator("svg.lmassert-chart")
    assert chart.is_visible()
    # metric + two constraints + "all constraints", one bar per setting, each with its interval whisker
    assert chart.locator("rect.lmassert-bar").count() == 5 * 4
    assert chart.locator("g.lmassert-ci").count() == 5 * 4
    box = chart.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100
    tabs = report.locator(".lm-TabBar-tab").all_inner_texts()
    assert tabs[:3] == ["Pass rates", "Comparisons", "Cost & compile"] and tabs[3].startswith("Demos (")
    assert tabs[4:] == ["Counterexamples", "Timeline", "Failures (0)"]
    assert "no_hashtags: Vanilla 0% -> Infer w/ Assert 100% (+100 points" in report.inner_text()
    # the progress widget finished every setting
    progress = page.locator(".lmassert-progress")
    assert "5/5 settings done" in progress.inner_text()

    SHOTS.mkdir(parents=True, exist_ok=True)
    _shoot(page, report, SHOTS / "report.png")

    # the comparisons tab: paired differences, noise called noise in words (8 of 8 flipped: distinguishable)
    report.locator(".lm-TabBar-tab", has_text="Comparisons").click()
    comparisons = report.locator("table.lmassert-comparisons")
    comparisons.wait_for(state="visible")
    rows = comparisons.locator("tbody tr").all_inner_texts()
    assert len(rows) == 3 * 4  # three like-with-like pairs x (two constraints, all constraints, the metric)
    first = next(r for r in rows if "Vanilla → Infer w/ Assert" in r and "no_hashtags" in r)
    assert "+100 points" in first and "distinguishable at this n" in first
    assert any("not distinguishable from noise" in r for r in rows)  # Compile -> Compile w/ Assert: no change
    _shoot(page, report, SHOTS / "report-comparisons.png")
    report.locator(".lm-TabBar-tab", has_text="Cost & compile").click()
    costs = report.locator("table.lmassert-costs")
    costs.wait_for(state="visible")
    assert costs.locator("tbody tr").count() == 5 and "judge calls" in costs.inner_text()
    assert report.locator("table.lmassert-compile tbody tr").count() == 3

    # the constraint Dropdown filters the counterexamples, in the browser
    report.locator(".lm-TabBar-tab", has_text="Counterexamples").click()
    select = report.locator(".widget-dropdown").filter(has=page.locator("label", has_text="constraint")).locator(
        "select")
    select.wait_for(state="visible")
    labels = select.locator("option").all_inner_texts()
    target = next(label for label in labels if label.startswith("no_hashtags"))
    select.select_option(label=target)
    rows = report.locator(".lmassert-counterexamples .lmassert-cx")
    page.wait_for_function(
        """() => { const r = [...document.querySelectorAll('.lmassert-report-widget .lmassert-cx')]
                       .filter(e => e.offsetParent !== null);
                   return r.length > 0 && r.every(e => e.textContent.includes('no_hashtags')); }""",
        timeout=10_000,
    )
    visible = [t for t in rows.all_inner_texts() if t.strip()]
    assert visible and all("Please revise the tweet to remove hashtag phrases." in t for t in visible)
    _shoot(page, report, SHOTS / "report-counterexamples.png")

    _check_timeline_tab(page, report)
    _check_demo_review(page, report)

    # XSS: the control payload (raw, on purpose) ran; the report's payloads are only text
    page.wait_for_function("() => window.__control === 1", timeout=15_000)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__xss") is None
    assert "XSS" not in page.title()
    assert not dialogs
    text = report.inner_text()
    assert """<img src=x onerror="window.__xss=1;document.title='XSS'">""" in text
    assert "<script>window.__xss=2</script>" in text
    assert report.locator("img, script, iframe, object, embed").count() == 0


def _select(page: Any, scope: Any, label: str) -> Any:
    """The <select> of the ipywidgets Dropdown labelled `label` inside `scope`."""
    return scope.locator(".widget-dropdown").filter(has=page.locator("label", has_text=label)).locator("select")


def _options(select: Any) -> list[str]:
    """The option labels (ipywidgets writes their spaces as no-break spaces)."""
    return [t.replace("\xa0", " ") for t in select.locator("option").all_inner_texts()]


def _choose(select: Any, label: str) -> None:
    raw = select.locator("option").all_inner_texts()
    select.select_option(label=raw[_options(select).index(label)])


def _kernel_value(page: Any, expression: str) -> str:
    """`expression` evaluated in the notebook's kernel (its text/plain repr), without adding a cell."""
    return page.evaluate(
        """async (expr) => {
             const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
             const reply = await kernel.requestExecute({code: '', silent: true, store_history: false,
                                                        user_expressions: {v: expr}}).done;
             return reply.content.user_expressions.v.data['text/plain'];
           }""",
        expression,
    )


def _check_timeline_tab(page: Any, report: Any) -> None:
    """Pick a setting and an example; every attempt is a row, the retry shows its feedback and a word diff."""
    report.locator(".lm-TabBar-tab", has_text="Timeline").click()
    tab = report.locator(".lmassert-timeline-tab")
    setting = _select(page, tab, "setting")
    setting.wait_for(state="visible")
    checked = setting.locator("option:checked").inner_text().replace("\xa0", " ")
    assert checked == "C+Infer w/ Assert"  # the setting with assertions at inference
    _choose(setting, "Infer w/ Assert")
    example = _select(page, tab, "example")
    labels = _options(example)
    assert len(labels) == 8 and all(label.endswith("· 1 retry") for label in labels)
    _choose(example, labels[3])
    page.wait_for_function(
        """() => { const h = document.querySelector('.lmassert-timeline-tab .lmassert-timeline-head');
                   return h && h.textContent.includes('Infer w/ Assert · #3'); }""", timeout=10_000)
    rows = tab.locator("tr.lmassert-attempt")
    assert rows.count() == 2
    first, retry = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "first try" in first and "#travel" in first and "✗ no_hashtags" in first
    assert "retry 1" in retry and "Please revise the tweet to remove hashtag phrases." in retry
    assert "no_hashtags fail → pass" in retry and "kept" in retry
    assert tab.locator("tr.lmassert-attempt.lmassert-kept").count() == 1
    assert "#travel #france" in rows.nth(1).locator(".lmassert-del").all_inner_texts()[0]
    assert "lovely in spring" in rows.nth(1).locator(".lmassert-ins").all_inner_texts()[0]
    # the LM's payload is text in the timeline too
    assert """<img src=x onerror="window.__xss=1;document.title='XSS'">""" in retry
    SHOTS.mkdir(parents=True, exist_ok=True)
    _shoot(page, tab, SHOTS / "report-timeline.png")

    # pin the kept attempt as a demo of its step: the program in the kernel gets it
    assert _kernel_value(page, "len(tweeter.GenerateTweet.demos)") == "4"
    tab.locator("button", has_text="Pin as a demo").click()
    page.wait_for_function(
        "() => document.querySelector('.lmassert-timeline-tab').innerText.includes('tweeter rebound: 5 demos')",
        timeout=15_000)
    assert _kernel_value(page, "len(tweeter.GenerateTweet.demos)") == "5"
    assert _kernel_value(page, "tweeter.GenerateTweet.demos[-1]['question']") == "'Where is landmark 3?'"


def _check_demo_review(page: Any, report: Any) -> None:
    """Reject a demo in the Demos tab: the registry's program and the notebook variable lose it."""
    report.locator(".lm-TabBar-tab", has_text="Demos (").click()
    panel = report.locator(".lmassert-review-panel")
    panel.wait_for(state="visible")
    items = panel.locator(".lmassert-review-item")
    assert items.count() == 5  # four bootstrapped counterexample demos and the one pinned above
    assert "GenerateTweet:pin1" in items.nth(4).inner_text() and "pinned by hand" in items.nth(4).inner_text()
    panel.locator(".widget-toggle-buttons").nth(1).locator("button", has_text="reject").click()
    page.wait_for_function(
        """() => { const panel = document.querySelector('.lmassert-review-panel');
                   const items = panel.querySelectorAll('.lmassert-review-item');
                   return items.length === 5 && items[1].innerText.includes('rejected by hand')
                          && panel.innerText.includes('tweeter rebound: 4 demos (1 rejected by hand, 1 pinned)'); }""",
        timeout=15_000)
    assert _kernel_value(page, "len(tweeter.GenerateTweet.demos)") == "4"
    registry = "__import__('lmassert_magic.registry', fromlist=['x']).get_registry().programs['tweeter']"
    assert _kernel_value(page, f"{registry}.program is tweeter") == "True"
    assert _kernel_value(page, f"sorted({registry}.review.rejected)") == "['GenerateTweet:2']"
    _shoot(page, panel, SHOTS / "report-demo-review.png")


def _load_test_report() -> Any:
    spec = importlib.util.spec_from_file_location("_lmassert_test_report", Path(__file__).with_name("test_report.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_static_html_payloads_inert_in_chromium(browser: Any) -> None:
    from lmassert_magic.report import CompileReport

    tr = _load_test_report()
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    payloads = [p.replace("alert(1)", "window.__xss=1") for p in tr.PAYLOADS]
    static, fragments = [], []
    for p in payloads:
        report = CompileReport(tr.payload_result(p))
        static.append(report.html())
        fragments += tr.widget_html_values(report.widget())
    page.set_content("<html><body><div id='static'>" + "".join(static) + "</div><div id='w'></div></body></html>")
    # inject like the ipywidgets HTML view does: innerHTML of each fragment
    page.evaluate("(fs) => { const d = document.getElementById('w'); for (const f of fs) {"
                  " const e = document.createElement('div'); e.innerHTML = f; d.appendChild(e); } }", fragments)
    page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
    # positive control: the same injection with a raw payload does run
    page.evaluate("() => { const e = document.createElement('div');"
                  " e.innerHTML = '<img src=x onerror=\"window.__control=1\">'; document.body.appendChild(e); }")
    page.wait_for_function("() => window.__control === 1", timeout=10_000)
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__xss") is None
    assert not dialogs
    assert page.locator("#w img, #w script, #w iframe, #w object, #w a, #static img, #static script").count() == 0
    body = page.inner_text("#w")
    for p in payloads:
        shown = p.translate({c: f"\\u{c:04x}" for c in (0x00, 0x200B, 0x202E)})
        assert shown.strip() in body, p
