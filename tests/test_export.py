"""`%lmassert export`: the exported files rebuild the program without magics and behave the same."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import uuid

import dspy
import pytest
from IPython.core.error import UsageError

from lmassert_magic.engine.runtime import is_activated
from lmassert_magic.registry import get_registry

from helpers import GENERATE_TWEET_CELL, NO_HASHTAGS_CELL, feedback_dummy_lm, tweet_data_cell

NOTEBOOK = [
    GENERATE_TWEET_CELL,
    tweet_data_cell(3, 2, train_prefix="q", fact="fact about ", answer="a", extra='''
MAX_LEN = 280
BANNED = ["spam", "eggs"]

def allowed(text):
    return not any(word in text for word in BANNED)
'''),
    NO_HASHTAGS_CELL,
    '''%%assert GenerateTweet --name fits --backtracks 1
(len(tweet) <= MAX_LEN
 and allowed(tweet))
f"Keep it under {MAX_LEN} characters and avoid {BANNED}; it was {len(tweet)}."
''',
]

COMPILE = (
    "%%compile tweeter --train trainset --dev devset --metric quality "
    "--settings vanilla,compile_assert,c_infer_assert\n"
    "retrieve >> GenerateTweet\n"
)


def load_module(path):
    name = f"exported_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_dicts(demos):
    return [d.toDict() if hasattr(d, "toDict") else dict(d) for d in demos]


def run_traced(program, questions):
    """Outputs and every prompt the LM saw: equal prompts mean equal demos, instructions and feedback."""
    lm = feedback_dummy_lm()
    with dspy.context(lm=lm):
        outputs = [dict(program(question=q).items()) for q in questions]
    return outputs, [h["messages"] for h in lm.history]


@pytest.fixture
def compiled(ip):
    for cell in NOTEBOOK:
        ip.run_cell(cell)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE)
    return ip


def test_exported_program_loads_and_gives_the_same_outputs(compiled, tmp_path, capsys):
    ip = compiled
    ip.run_cell(f"%lmassert export tweeter {tmp_path}")
    assert f"Exported tweeter: {tmp_path / 'tweeter.py'} and {tmp_path / 'tweeter.json'}" in capsys.readouterr().out
    module = load_module(tmp_path / "tweeter.py")
    program = module.load_program()
    assert is_activated(program)
    notebook_program = ip.user_ns["tweeter"]
    assert as_dicts(program.GenerateTweet.demos) == as_dicts(notebook_program.GenerateTweet.demos)
    assert any("feedback" in d for d in program.GenerateTweet.demos)  # counterexample demos survived
    questions = ["cats", "dogs"]
    exported_out, exported_prompts = run_traced(program, questions)
    notebook_out, notebook_prompts = run_traced(notebook_program, questions)
    assert exported_out == notebook_out
    assert exported_out[0]["tweet"] == "clean tweet"  # the constraint backtracked in both
    assert exported_prompts == notebook_prompts
    assert len(notebook_prompts) == 4  # one failing attempt and one retry per question


def test_exported_constraints_behave_like_the_notebook_ones(compiled, tmp_path):
    ip = compiled
    ip.run_cell(f"%lmassert export tweeter {tmp_path / 'out.py'}")
    module = load_module(tmp_path / "out.py")
    assert (tmp_path / "out.json").exists()
    exported = {c.name: c for c in module.CONSTRAINTS}
    registered = {n: e.constraint for n, e in get_registry().constraints.items()}
    assert set(exported) == set(registered) == {"no_hashtags", "fits"}
    for fields in ({"tweet": "fine"}, {"tweet": "#tag"}, {"tweet": "spam here"}, {"tweet": "x" * 300}):
        for name in exported:
            assert exported[name].check(fields) == registered[name].check(fields), (name, fields)
            assert exported[name].feedback(fields) == registered[name].feedback(fields)
    assert exported["fits"].max_backtracks == 1 and exported["fits"].timeout == 120.0


def test_exported_file_imports_only_dspy_lmassert_magic_and_what_the_notebook_used(compiled, tmp_path):
    compiled.run_cell(f"%lmassert export tweeter {tmp_path}")
    tree = ast.parse((tmp_path / "tweeter.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots == {"pathlib", "re", "dspy", "lmassert_magic"}
    source = (tmp_path / "tweeter.py").read_text()
    assert "def allowed(text):" in source and "BANNED = ['spam', 'eggs']" in source and "MAX_LEN = 280" in source
    assert "REQUIRED = ()" in source


def test_exported_program_runs_in_a_fresh_python_without_ipython(compiled, tmp_path):
    ip = compiled
    ip.run_cell(f"%lmassert export tweeter {tmp_path}")
    script = (
        "import json, sys, dspy\n"
        "from dspy.utils import DummyLM\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import tweeter\n"
        "program = tweeter.load_program()\n"
        "lm = DummyLM({'remove hashtag': {'tweet': 'clean tweet'}, 'question': {'tweet': '#bad tweet'}})\n"
        "with dspy.context(lm=lm):\n"
        "    out = program(question='cats')\n"
        "print(json.dumps({'tweet': out.tweet, 'context': out.context, 'calls': len(lm.history),\n"
        "                  'magics': 'lmassert_magic.magics' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected, _ = run_traced(ip.user_ns["tweeter"], ["cats"])
    assert result == {"tweet": expected[0]["tweet"], "context": expected[0]["context"], "calls": 2, "magics": False}


def test_notebook_objects_without_source_are_required_arguments(ip, tmp_path):
    for cell in NOTEBOOK:
        ip.run_cell(cell)
    ip.run_cell(
        "class Retriever:\n"
        "    def __init__(self, prefix):\n"
        "        self.prefix = prefix\n"
        "    def __call__(self, question):\n"
        "        return [self.prefix + question]\n"
        "retriever = Retriever('fact about ')\n"
    )
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("retrieve >>", "retriever >>"))
    ip.run_cell(f"%lmassert export tweeter {tmp_path}")
    module = load_module(tmp_path / "tweeter.py")
    assert module.REQUIRED == ("retriever",)
    with pytest.raises(TypeError, match="pass the notebook object"):
        module.load_program()
    with pytest.raises(TypeError, match="unexpected object"):
        module.load_program(retriever=ip.user_ns["retriever"], other=1)
    program = module.load_program(retriever=ip.user_ns["retriever"])
    assert run_traced(program, ["cats"]) == run_traced(ip.user_ns["tweeter"], ["cats"])


def test_module_subclass_program_exports_its_class_source(ip, tmp_path):
    for cell in NOTEBOOK:
        ip.run_cell(cell)
    ip.run_cell('''
class Tweeter(dspy.Module):
    def __init__(self):
        super().__init__()
        self.write = dspy.Predict(GenerateTweet)

    def forward(self, question):
        return self.write(question=question, context=retrieve(question))
''')
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("retrieve >> GenerateTweet", "Tweeter"))
    ip.run_cell(f"%lmassert export tweeter {tmp_path}")
    source = (tmp_path / "tweeter.py").read_text()
    assert "class Tweeter(dspy.Module):" in source and "def retrieve(question):" in source
    module = load_module(tmp_path / "tweeter.py")
    program = module.load_program()
    assert type(program).__name__ == "Tweeter"
    assert run_traced(program, ["cats", "dogs"]) == run_traced(ip.user_ns["tweeter"], ["cats", "dogs"])


def test_stale_program_exports_the_definitions_it_was_compiled_from(compiled, tmp_path, capsys):
    ip = compiled
    ip.run_cell(NOTEBOOK[0].replace("tweet: str = Out()", "post: str = Out()"))
    capsys.readouterr()
    ip.run_cell(f"%lmassert export tweeter {tmp_path}")
    assert "is stale" in capsys.readouterr().out
    module = load_module(tmp_path / "tweeter.py")
    assert list(module.GenerateTweet.output_fields) == ["tweet"]
    assert run_traced(module.load_program(), ["cats"]) == run_traced(ip.user_ns["tweeter"], ["cats"])


def test_export_errors_are_usage_errors(compiled, tmp_path):
    ip = compiled
    with pytest.raises(UsageError, match="PATH must be a directory, a .py file or a .json file"):
        ip.run_cell(f"%lmassert export tweeter {tmp_path / 'x.txt'}")
    with pytest.raises(UsageError, match="must be importable"):
        ip.run_cell(f"%lmassert export tweeter {tmp_path / 'my-file.py'}")
    (tmp_path / "blocker").write_text("a file, not a directory")
    with pytest.raises(UsageError, match="cannot write the export"):
        ip.run_cell(f"%lmassert export tweeter {tmp_path / 'blocker' / 'sub'}")
    assert not list(tmp_path.glob("*.py"))
