"""Writes the four case-study notebooks from the sources below (outputs come from running them).

    python notebooks/make_notebooks.py          # rewrite sources (drops outputs)
    lmassert-notebook --inplace notebooks/0*.ipynb   # full run on the embedded model, outputs kept

Keeping the sources here makes the four notebooks consistent and reviewable as Python. Every
sentence about results is printed by a code cell from the run's own numbers (`report.result`):
nothing is typed by hand, so a re-run can never disagree with its text.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

#: The quickstart's examples per split: small enough for the README's main command to stay within
#: five minutes from a cold cache on 2 cores; 05_tweetgen_full runs the same code on all 40.
QUICK_N = 4

SETUP = '''import os

# CI and quick tries set LMASSERT_SMALL=N to run on N train and N dev examples.
SMALL = int(os.environ.get("LMASSERT_SMALL", "0") or 0)
N = SMALL or {full}  # examples per split in a full run'''

LOAD = '''%load_ext lmassert_magic
%lm local'''

PAPER_CELL = '''import pandas as pd

ours = report.summary()
paper = pd.DataFrame({paper}, index=["Vanilla", "Infer w/ Assert", "Compile", "Compile w/ Assert", "C+Infer w/ Assert"])
side_by_side = pd.concat({{"this run (SmolLM2-135M)": ours[{cols}], "paper (gpt-3.5-turbo)": paper}}, axis=1)
side_by_side.round(1)'''


def _cell(kind: str, src: str) -> nbformat.NotebookNode:
    if kind == "md":
        return new_markdown_cell(src)
    if kind == "solution":  # collapsed in JupyterLab and Notebook 7, run like any other cell
        return new_code_cell(src, metadata={"jupyter": {"source_hidden": True}, "tags": ["solution"]})
    return new_code_cell(src)


def nb(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    book = new_notebook()
    book.cells = [_cell(kind, src) for kind, src in cells]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    return book


READ_REPORT = """## Reading the report

* **Pass rates**: one row per setting, one column per constraint: the share of *examples* whose
  returned output satisfies it, with the number of examples `n` and a 95% interval (Wilson).
  "all constraints" is the share of examples that satisfy every one. Hard constraints have solid
  bars, soft ones dashed; the whiskers are the intervals. `lm_calls/ex` is what the backtracking
  costs (cache hits included, so every setting is counted the same way).
* **Comparisons**: each setting against the one it should be compared with (Infer w/ Assert vs
  Vanilla, Compile w/ Assert vs Compile, C+Infer w/ Assert vs Compile w/ Assert), paired example by
  example, with an interval on the difference. A difference whose interval holds 0 is noise at this
  number of examples, and the report says so.
* **Demos**: what compilation put in the prompt of each predictor. Demos marked as coming from a
  counterexample carry the `feedback` and the failed `past_*` output: the student sees what a fix
  looks like.
* **Counterexamples**: every backtrack: the failing output, the feedback, and the fixed output (or
  *not fixed* when the budget ran out).
* The summary line at the top is the one to read aloud.

The report object is also a set of pandas tables: `report.summary()`, `report.pass_rates()`,
`report.counterexamples()`."""

HONESTY = """## How this compares with the paper, and where assertions lose

Every sentence below is printed from this run's numbers (`report.result`), with n and a 95%
interval; none is typed by hand. A run with the same seed, data and model gives the same tables."""

FINDINGS = '''import dspy

result = report.result
n = max(s.n for s in result.settings.values())
print(f"{n} dev examples, seed {result.seed}, model {dspy.settings.lm.model}")
print()
print("\\n".join(result.headlines()))
print()
comparisons = result.comparisons()
lost = comparisons[comparisons["diff"] < 0]
if lost.empty:
    print("No measure fell under assertions in this run.")
for row in lost.to_dict("records"):
    verdict = "a real loss at this n" if row["distinguishable"] else "not distinguishable from noise at this n"
    print(f"Loses: {row['measure']}: {row['base']} {row['base_rate']:.0f}% -> {row['setting']} {row['rate']:.0f}% "
          f"({row['diff']:+.0f} points, 95% CI {row['ci_low']:+.0f} to {row['ci_high']:+.0f}, n={row['n']}): "
          f"{verdict}.")'''

IN_FULL = """## One retry and one counterexample, in full

The tables count; these show. First a retry at inference (Infer w/ Assert): the output that
failed, the feedback the model was given, and what it wrote next. Then a counterexample from
compiling with assertions: the teacher's failed output and its feedback, which become a demo the
student sees."""

IN_FULL_CELL = '''from lmassert_magic.report.text import describe_backtrack

result = report.result
retries = result.settings["infer_assert"].counterexamples if "infer_assert" in result.settings else []
retry = next((c for c in retries if c.fixed), retries[0] if retries else None)
print("A retry at inference:\\n")
print(describe_backtrack(retry) if retry else "No example was retried in this run.")
counterexample = next(iter(result.compile_counterexamples), None)
print("\\nA counterexample from compiling with assertions:\\n")
print(describe_backtrack(counterexample) if counterexample else "No counterexample came up while compiling.")'''

CHECK_HINT = """Each exercise checks itself: after your `%%assert` cell, run `check_exercise(...)` below; after
you recompile, pass your report too (`check_exercise("...", my_report)`) and it also checks that the
compile used your change. The solutions are in the collapsed cells after it (click to expand); a
headless run executes them, so they are known to pass."""

EX_SLICE = '''# The solutions recompile on a slice of the data: enough to see the change at work, not to measure it.
EX_N = min(N, {n})
ex_train, ex_dev = trainset[:EX_N], devset[:EX_N]'''


def exercises(
    text: str, keys: tuple[str, str], solutions: tuple[str, str], compile_cell: str, slice_n: int = 4,
) -> list[tuple[str, str]]:
    """Two exercises, a check a learner runs, and the solutions (collapsed) that pass those checks."""
    checks = "\n".join(f'print(check_exercise("{key}"))' for key in keys)
    passed = "\n".join(f'print(check_exercise("{key}", report_ex))' for key in keys)
    return [
        ("md", f"## Exercises\n\n{text}\n\n{CHECK_HINT}"),
        ("code", f"from lmassert_magic.exercises import check_exercise\n\n{checks}"),
        ("md", "### Solutions"),
        ("solution", solutions[0]),
        ("solution", solutions[1]),
        ("solution", EX_SLICE.format(n=slice_n)),
        ("solution", compile_cell),
        ("solution", passed + "\nreport_ex.summary()"),
    ]


# ---------------------------------------------------------------------------------------- 01 TweetGen

QUICKSTART = [
    ("md", """# LM Assertions quickstart: TweetGen

This notebook is the whole idea in ten cells. A small pipeline answers a question from retrieved
passages and writes a tweet about it. We state what a good tweet is as **constraints**, and let
the pipeline **backtrack** (retry a step, showing the model its failed output and our feedback)
when a constraint fails. Then we **compile** the pipeline with the constraints on, so the few-shot
demos it learns already satisfy them, and compare the paper's five settings in one report.

Everything runs offline: the default LM is an embedded 135M-parameter model (SmolLM2-135M-Instruct,
running in llama.cpp on the CPU) and the data ship with the package. No API key needed."""),
    ("code", SETUP.format(full=QUICK_N)),
    ("md", """`%load_ext` registers the magics; `%lm local` starts the embedded model (lazily, on
127.0.0.1 only). `%lm openai/gpt-4o-mini` or `%lm <model> --api-base http://localhost:11434/v1`
would use another model instead."""),
    ("code", LOAD),
    ("md", """## Data and retriever

A small fictional world (so the model cannot answer from memory) with questions, gold answers and a
BM25 retriever over its passages. `retrieve` is a plain Python function: the pipeline calls it by
field name."""),
    ("code", '''import re

from lmassert_magic.datasets import load_study, answer_in_text

study = load_study("tweetgen", limit=N)
trainset, devset = study.train, study.dev
retriever = study.retriever(k=3)


def retrieve(question):
    return retriever(question)


print(study)
print(devset[0].question, "->", devset[0].answer)
retrieve(devset[0].question)'''),
    ("md", """## Signatures

A signature says what a step takes and returns. The docstring is the instruction; `In()` and
`Out()` mark fields. Two steps: find a short answer, then write the tweet."""),
    ("code", '''%%signature GenerateAnswer
"""Answer the question with a short phrase taken from the context."""
context: list[str] = In(desc="passages that may contain the answer")
question: str = In()
answer: str = Out(desc="a few words")'''),
    ("code", '''%%signature GenerateTweet
"""Write an engaging tweet that answers the question, faithful to the context."""
question: str = In()
context: list[str] = In()
answer: str = In()
tweet: str = Out()'''),
    ("md", """## Constraints

Each `%%assert` cell is a condition over the step's fields, then the feedback the model gets when
it fails. **Soft** constraints (the default, `Suggest`) retry up to the budget and then let the
pipeline continue; **hard** ones (`--hard`, `Assert`) stop the example with an error when retries
run out. Use hard only for what must never pass through (a tweet over 280 characters cannot be
posted); use soft for quality.

Two are judged by the LM itself with `lm_judge`, which asks a yes/no question. Each feedback
message asks for a revision that *keeps the answer*: a fix that drops the answer trades a
constraint for quality."""),
    ("code", '''%%assert GenerateTweet --name no_hashtags
not re.search(r"#\\w+", tweet)
f"Remove the hashtag phrases but keep the answer ({answer}) in the tweet."'''),
    ("code", '''%%assert GenerateTweet --name under_280 --hard
len(tweet) <= 280
f"The tweet is {len(tweet)} characters long; keep it under 280 characters."'''),
    ("code", '''%%assert GenerateTweet --name has_answer
answer_in_text(answer, tweet)
f"The tweet must state the answer: {answer}."'''),
    ("code", '''%%assert GenerateTweet --name engaging
lm_judge("Is this tweet engaging?", tweet=tweet)
f"Make the tweet more engaging (a lively first sentence, no hashtags) and keep the answer ({answer})."'''),
    ("code", '''%%assert GenerateTweet --name faithful
lm_judge("Is every claim in the tweet supported by the context?", context=context, tweet=tweet)
f"Only say what the context supports, and keep the answer ({answer})."'''),
    ("md", """### Is the judge any good? Measure it

An LM judge is a measuring instrument, so we measure it first: run it on labelled tweets whose
right answer is known by construction and count how often it agrees. *faithful* items state the
example's gold answer (yes) or another example's answer (no); *engaging* items are written lively
(yes) or flat (no) on purpose. `%lmassert calibrate` reports the agreement with its interval and
Cohen's kappa (0 = chance), caches it on disk per model and cell, and the report shows it next to
the judge's pass rate."""),
    ("code", '''from lmassert_magic.datasets.labelled import engaging_labelled, faithful_labelled

n_labels = 8 if SMALL else min(40, 4 * N)  # 16 labels at the quickstart's N: a quicker start, wider intervals
faithful_labels = faithful_labelled(n_labels)
engaging_labels = engaging_labelled(n_labels)
faithful_labels[0], faithful_labels[-1]'''),
    ("code", '''%lmassert calibrate faithful --labels faithful_labels
%lmassert calibrate engaging --labels engaging_labels'''),
    ("md", """On this 135M-parameter model both judges sit near chance (the lines above say so when they
do): their pass rates below measure the judge's habits more than the tweets. So, next to the LM
judge, an **offline check** that works here: a tweet is *grounded* when every name and number in
it appears in the context. It is a labelled proxy for *faithful* (it cannot see a wrong relation
between right names), and we can measure it the same way."""),
    ("code", '''from lmassert_magic.engine.calibration import calibrate_judge
from lmassert_magic.engine.proxies import grounded_in_context

print(calibrate_judge(grounded_in_context, faithful_labels, name="grounded_in_context").describe())'''),
    ("code", '''%%assert GenerateTweet --name grounded
grounded_in_context(tweet, context)
f"Only name people, places and numbers that appear in the context, and keep the answer ({answer})."'''),
    ("md", """## Metric

The task metric is separate from the constraints: here a tweet is *good* when it contains the gold
answer, has no hashtags and fits in 280 characters."""),
    ("code", '''def quality(example, pred, trace=None):
    tweet = pred.tweet or ""
    return answer_in_text(example.answer, tweet) and not re.search(r"#\\w+", tweet) and len(tweet) <= 280'''),
    ("md", """## Compile and compare

`%%compile` wires the chain by field name (`retrieve` fills `context`), attaches the constraints,
and runs the five settings of the paper: **Vanilla** (no constraints), **Infer w/ Assert**
(backtracking at inference), **Compile** (few-shot bootstrapping), **Compile w/ Assert** (the
teacher backtracks, so demos satisfy the constraints and include fixed counterexamples) and
**C+Infer w/ Assert** (both). `tweeter` becomes the compiled program with assertions on."""),
    ("code", '''%%compile tweeter --train trainset --dev devset --metric quality -o report --seed 0
retrieve >> GenerateAnswer >> GenerateTweet'''),
    ("md", READ_REPORT),
    ("code", '''report.pass_rates()[["setting", "constraint", "kind", "n", "passed", "pass_rate", "ci_low", "ci_high",
                     "checks", "backtracks"]].round(1)'''),
    ("md", """## Quality under assertions

Constraint gains are only half of the story: does the *task metric* hold? The sentence below says,
from this run's examples, where quality moved between Vanilla and Infer w/ Assert and which
constraints' retries touched the examples that lost it."""),
    ("code", '''print(report.result.explain_quality("vanilla", "infer_assert"))
report.result.quality_changes("vanilla", "infer_assert")[["index", "base_score", "score", "retried_for", "outputs"]]'''),
    ("md", "The compiled program is a plain DSPy module with assertions active; call it like any other:"),
    ("code", '''prediction = tweeter(question=devset[0].question)
prediction.tweet'''),
    ("code", PAPER_CELL.format(
        paper='{"engaging": [32.2, 36.4, 2.0, 73.0, 85.0], "quality": [30.5, 30.6, 32.8, 42.9, 45.0]}',
        cols='["engaging", "quality"]',
    )),
    ("md", HONESTY),
    ("code", FINDINGS),
    ("md", f"""At {QUICK_N} examples most differences are noise: the sentences above say which. For numbers that
can tell settings apart, set `N = 40` in the first cell (the whole dev set; about half an hour on
a 2-core laptop), or run `%%compile` on your own larger data."""),
    ("md", IN_FULL),
    ("code", IN_FULL_CELL),
    *exercises(
        """1. Add a constraint that the tweet is **under 120 characters** (soft), with feedback that says how
   long it is (`quickstart.under_120`). Recompile and compare the `lm_calls/ex` column: what does
   the extra constraint cost?
2. Make `no_hashtags` **hard** (`--hard`, `quickstart.no_hashtags_hard`). Predict first: what
   happens to the `failed` column in Vanilla and in Infer w/ Assert, and why?
3. (no check) `%lmassert export tweeter exported/` writes a plain Python file and a DSPy JSON
   program: open the `.py` and find your constraints in it.""",
        ("quickstart.under_120", "quickstart.no_hashtags_hard"),
        ('''%%assert GenerateTweet --name under_120
len(tweet) < 120
f"The tweet is {len(tweet)} characters long; keep it under 120 characters and keep the answer ({answer})."''',
         '''%%assert GenerateTweet --name no_hashtags --hard
not re.search(r"#\\w+", tweet)
f"Remove the hashtag phrases but keep the answer ({answer}) in the tweet."'''),
        '''%%compile tweeter_ex --train ex_train --dev ex_dev --metric quality -o report_ex --seed 0 --settings infer_assert
retrieve >> GenerateAnswer >> GenerateTweet''',
        slice_n=2,  # the quickstart's time budget: one setting on two examples
    ),
]

# ---------------------------------------------------------------------------------------- 05 TweetGen, full size

FULL_INTRO = f"""# TweetGen at full size: the quickstart on every dev example

The quickstart's pipeline, constraints, judges and seed, run on the whole TweetGen dev split (40
examples) with 40 training examples for the compiled settings. At {QUICK_N} examples the quickstart can
show how assertions work but not whether they help; here the intervals are narrow enough that some
differences can be told from noise, and the generated sentences say which. The committed outputs
are one such run on the embedded model (its sizes, seed, versions and wall time are in the
notebook's `lmassert` metadata)."""

FULL_OUTRO = """This is the largest TweetGen run the shipped data allow (40 dev examples). The intervals
above are what 40 examples can resolve: a difference of a few points stays noise. With a larger
model (`%lm openai/...`, or any OpenAI-compatible server) the same cells measure that model."""


def full_size(cells: list[tuple[str, str]], intro: str, outro: str, full: int) -> list[tuple[str, str]]:
    """The quickstart's cells at another size: only the framing text and N change."""
    small_setup = SETUP.format(full=QUICK_N)
    out = [("md", intro)]
    for kind, src in cells[1:]:
        if src == small_setup:
            src = SETUP.format(full=full)
        elif src.startswith(f"At {QUICK_N} examples"):
            src = outro
        out.append((kind, src))
    return out


TWEETGEN_FULL = full_size(QUICKSTART, FULL_INTRO, FULL_OUTRO, full=40)

# ---------------------------------------------------------------------------------------- 02 MultiHop

MULTIHOP = [
    ("md", """# Case study 2: multi-hop question answering

Some questions need two searches: *"In which town was the director of 'The Salt Orchard' born?"*
needs the film's passage (to learn the director) and then the director's passage. The pipeline
writes a search query per hop and answers from what it found.

Two constraints from the paper help the query writer: a query must be **short** (under 100
characters) and **new** (not a repeat of an earlier query, which would retrieve the same passages
again). Both are soft: a long or repeated query is wasteful, not fatal."""),
    ("code", SETUP.format(full=40)),
    ("code", LOAD),
    ("code", '''from lmassert_magic.datasets import load_study, answer_exact_match

study = load_study("multihop", limit=N)
trainset, devset = study.train, study.dev
retriever = study.retriever(k=2)


def retrieve(query):
    return retriever(query)


print(study)
print(devset[0].question, "->", devset[0].answer, devset[0].gold_titles)'''),
    ("md", """## Signatures

`earlier_queries` gives the query writer the queries already tried, so the *new query* constraint
can be a condition over the step's own fields."""),
    ("code", '''%%signature GenerateSearchQuery
"""Write a simple search query that will help answer the question."""
context: list[str] = In(desc="may contain relevant facts")
question: str = In()
earlier_queries: list[str] = In(desc="queries already tried")
query: str = Out()'''),
    ("code", '''%%signature GenerateAnswer
"""Answer the question with a short factoid answer."""
context: list[str] = In(desc="may contain relevant facts")
question: str = In()
answer: str = Out(desc="often between 1 and 5 words")'''),
    ("md", """The pipeline loops over hops, so it is a `dspy.Module` written in the notebook; it uses the
registered signatures, and `%%compile` finds their constraints by signature."""),
    ("code", '''import dspy
from dspy.evaluate import normalize_text


def is_new_query(query, earlier_queries):
    seen = {normalize_text(q) for q in earlier_queries}
    return normalize_text(query) not in seen


class MultiHopQA(dspy.Module):
    def __init__(self, hops=2):
        super().__init__()
        self.generate_query = [dspy.Predict(GenerateSearchQuery) for _ in range(hops)]
        self.generate_answer = dspy.Predict(GenerateAnswer)

    def forward(self, question):
        context, queries = [], []
        for generate in self.generate_query:
            query = generate(context=context, question=question, earlier_queries=queries).query
            queries.append(query)
            context = list(dict.fromkeys(context + retrieve(query)))
        prediction = self.generate_answer(context=context, question=question)
        return dspy.Prediction(answer=prediction.answer, context=context, queries=queries)'''),
    ("md", "## Constraints (both soft)"),
    ("code", '''%%assert GenerateSearchQuery --name short_query
len(query) <= 100
"Query should be short and less than 100 characters."'''),
    ("code", '''%%assert GenerateSearchQuery --name new_query
is_new_query(query, earlier_queries)
f"Query should be distinct from: {'; '.join(earlier_queries)}"'''),
    ("md", "The metric is the paper's *answer correct* (normalised match, the answer may sit inside a longer reply)."),
    ("code", '''%%compile multihop --train trainset --dev devset --metric answer_exact_match -o report --seed 0
MultiHopQA'''),
    ("md", READ_REPORT),
    ("code", '''def retrieval_hit(example, pred):
    found = " ".join(pred.context)
    return all(title in found for title in example.gold_titles)


prediction = multihop(question=devset[0].question)
print(prediction.queries, "->", prediction.answer)'''),
    ("code", PAPER_CELL.format(
        paper=('{"suggestions passed (short_query)": [66.2, 88.0, 63.4, 71.6, 91.6], '
               '"answer correct": [41.6, 43.0, 40.4, 46.2, 45.4]}'),
        cols='["short_query", "new_query", "answer_exact_match"]',
    ).replace('ours[["short_query", "new_query", "answer_exact_match"]]',
              'ours[["short_query", "new_query", "answer_exact_match"]]')),
    ("md", HONESTY),
    ("code", FINDINGS),
    ("md", IN_FULL),
    ("code", IN_FULL_CELL),
    *exercises(
        """1. Add a constraint on `GenerateAnswer` that the answer is **at most 5 words** (soft,
   `multihop.short_answer`), recompile, and compare `answer_exact_match`: does a shorter answer
   help the exact-match metric or hurt it?
2. Make `new_query` **hard** (`multihop.new_query_hard`). Predict first: which examples can now
   fail, and in which settings?""",
        ("multihop.short_answer", "multihop.new_query_hard"),
        ('''%%assert GenerateAnswer --name short_answer
len(answer.split()) <= 5
f"Answer in at most 5 words (you used {len(answer.split())})."''',
         '''%%assert GenerateSearchQuery --name new_query --hard
is_new_query(query, earlier_queries)
f"Query should be distinct from: {'; '.join(earlier_queries)}"'''),
        '''%%compile multihop_ex --train ex_train --dev ex_dev --metric answer_exact_match -o report_ex --seed 0 --settings vanilla,infer_assert
MultiHopQA''',
    ),
]

# ---------------------------------------------------------------------------------------- 03 LongForm

LONGFORM = [
    ("md", """# Case study 3: long-form answers with citations

The pipeline writes a short paragraph that answers a question from numbered passages and cites
them as `[1]`, `[2]`. Two constraints from the paper:

* **citations**: every one or two sentences carry a citation (a regular-expression check);
* **faithful**: each cited sentence is supported by the passage it cites (an LM judge per
  citation).

Both are soft: an uncited or unsupported sentence makes the answer worse, not unusable."""),
    ("code", SETUP.format(full=40)),
    ("code", LOAD),
    ("code", '''from lmassert_magic.datasets import load_study, answer_in_text

study = load_study("longform", limit=N)
trainset, devset = study.train, study.dev
retriever = study.retriever(k=3)


def retrieve(question):
    return retriever(question)


def number_passages(context):
    """Numbered passages, so the LM can cite them as [n]."""
    return {"context": [f"[{i}] {passage}" for i, passage in enumerate(context, 1)]}


print(devset[0].question, "->", devset[0].answer)
number_passages(retrieve(devset[0].question))["context"]'''),
    ("code", '''%%signature GenerateCitedParagraph
"""Write two or three sentences that answer the question using the passages. End every sentence with the number of the passage it uses, like [1]."""
context: list[str] = In(desc="numbered passages")
question: str = In()
paragraph: str = Out(desc="sentences ending with citations like [1]")'''),
    ("md", """Helpers for the checks are ordinary notebook functions; constraint cells can call them."""),
    ("code", '''import re

from lmassert_magic import lm_judge  # the helpers below call the LM judge themselves

CITATION = re.compile(r"\\[(\\d+)\\]")


def sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\\s+", text.strip()) if s]


def has_citations(paragraph):
    """Every one or two sentences carry a citation [n] (the paper's rule)."""
    parts = sentences(paragraph)
    if not parts:
        return False
    return all(CITATION.search(" ".join(parts[i:i + 2])) for i in range(0, len(parts), 2))


def cited_pairs(paragraph, context, limit=3):
    pairs = []
    for sentence in sentences(paragraph):
        for number in CITATION.findall(sentence):
            if 1 <= int(number) <= len(context):
                pairs.append((sentence, context[int(number) - 1]))
    return pairs[:limit]


def citations_faithful(paragraph, context):
    """Each cited sentence is supported by its passage, judged by the LM (at most 3 per answer)."""
    pairs = cited_pairs(paragraph, context)
    return bool(pairs) and all(
        lm_judge("Is the sentence supported by the passage?", sentence=s, passage=p) for s, p in pairs
    )'''),
    ("code", '''%%assert GenerateCitedParagraph --name citations
has_citations(paragraph)
"Every 1-2 sentences should end with a citation in the format [n]."'''),
    ("code", '''%%assert GenerateCitedParagraph --name faithful
citations_faithful(paragraph, context)
"Make sure every sentence is supported by the passage it cites."'''),
    ("code", '''def answer_correct(example, pred, trace=None):
    return answer_in_text(example.answer, pred.paragraph or "")'''),
    ("code", '''%%compile cited_qa --train trainset --dev devset --metric answer_correct -o report --seed 0
retrieve >> number_passages >> GenerateCitedParagraph'''),
    ("md", READ_REPORT),
    ("code", '''prediction = cited_qa(question=devset[0].question)
prediction.paragraph'''),
    ("code", PAPER_CELL.format(
        paper='{"citation faithful": [78.8, 90.8, 79.6, 81.2, 91.8]}',
        cols='["citations", "faithful", "answer_correct"]',
    )),
    ("md", HONESTY),
    ("code", FINDINGS),
    ("md", IN_FULL),
    ("code", IN_FULL_CELL),
    *exercises(
        """1. Write a constraint that the paragraph cites **at least two different passages** (soft,
   `longform.two_passages`), with feedback naming the passages it did not use. Recompile: does
   citation coverage go up, and what happens to `faithful`?
2. Make `citations` **hard** (`longform.citations_hard`). Predict first: how many examples fail in
   Infer w/ Assert, given the pass rates above?""",
        ("longform.two_passages", "longform.citations_hard"),
        ('''%%assert GenerateCitedParagraph --name two_passages
len(set(CITATION.findall(paragraph))) >= 2
f"Cite at least two different passages; not cited yet: {sorted(set(map(str, range(1, len(context) + 1))) - set(CITATION.findall(paragraph)))}."''',
         '''%%assert GenerateCitedParagraph --name citations --hard
has_citations(paragraph)
"Every 1-2 sentences should end with a citation in the format [n]."'''),
        '''%%compile cited_qa_ex --train ex_train --dev ex_dev --metric answer_correct -o report_ex --seed 0 --settings vanilla,infer_assert
retrieve >> number_passages >> GenerateCitedParagraph''',
    ),
]

# ---------------------------------------------------------------------------------------- 04 QuizGen

QUIZGEN = [
    ("md", """# Case study 4: quiz generation

Given a question and its answer, the pipeline writes a multiple-choice question: the correct answer
and three wrong options (*distractors*). The paper's constraints were a valid JSON object, the
answer among the options, and plausible distractors judged by GPT-3.5. Here the model is the
embedded 135M one, and three things follow from what it can and cannot do:

* **The structure does the format.** The model writes under a JSON grammar, so "valid JSON" would
  pass by construction and teach nothing. It writes the three wrong options as three output fields
  (`option_b` to `option_d`), and a Python step puts the correct answer among them: "four options"
  and "the answer is among them" hold by construction. An earlier version of this study had the
  model write a list of options and checked its length (`four_options`) and the answer
  (`answer_included`): the model rarely wrote exactly four items, with or without retries, so every
  other check was measured on broken lists (that run's outputs are in this notebook's git history).
  With four option fields instead, probes showed that the model often kept the answer at first but
  a retry for any other check lost it: it copied the candidates from option A on. A check that
  retries destroy teaches the wrong lesson, so the program now places the answer.
* **A word bank instead of passages.** The model is given up to five *candidates*: other names of
  the answer's kind from the study's world (other towns for a town, other years for a year), like a
  teacher's word bank. Given whole retrieved passages, it copied passage lines as options, and the
  retries made options longer still (the earlier run in the git history shows it).
* **No LM judge.** Its yes/no judge is at chance (see the quickstart), so "plausible" is checked
  by a program: a distractor taken from the candidates is of the answer's kind by construction.

The constraints are the ones the structure cannot enforce and a program can check:

* **distinct**: the four options are all different: no distractor repeats another or the correct
  answer (a repeated option makes a three-option quiz, a distractor equal to the answer makes two
  right answers);
* **from_candidates**: every distractor is one of the candidates (a plausible wrong answer of the
  answer's kind, short and shaped like the answer, so its form gives nothing away).

Both are soft (`Suggest`): a quiz that misses one is still worth showing to a teacher, who can fix
an option by hand. Each feedback message says exactly what to change ("replace X with Y"): a 135M
model does not work out from "the options must differ" which option to replace. The metric,
*validity*, is both at once on the quiz the program returns."""),
    ("code", SETUP.format(full=40)),
    ("code", LOAD),
    ("code", '''import random

from lmassert_magic.datasets import load_study, normalize_text

study = load_study("quizgen", limit=N)
# the quiz writer is given the question, its answer and the answer's kind (town, year, ...)
trainset = [ex.with_inputs("question", "answer", "answer_type") for ex in study.train]
devset = [ex.with_inputs("question", "answer", "answer_type") for ex in study.dev]


def same_kind(answer, answer_type):
    """Up to five other names of the answer's kind: the same ones for the same answer in every run."""
    others = [name for name in study.answer_values[answer_type] if name != answer]
    return random.Random(answer).sample(others, min(5, len(others)))


def quiz_options(question, answer, option_b, option_c, option_d):
    """The four options the quiz shows: the correct answer and the three distractors, in an order fixed
    by the question (so the answer's place gives nothing away, and a re-run shows the same quiz)."""
    options = [answer, option_b, option_c, option_d]
    random.Random(question).shuffle(options)
    return {"options": options}


print(study)
print(devset[0].question, "->", devset[0].answer, f"({devset[0].answer_type})")
same_kind(devset[0].answer, devset[0].answer_type)'''),
    ("md", """The pipeline is three steps: `same_kind` (plain Python; its list goes to the one input
the next step still lacks, `candidates`), `GenerateChoices` (the model writes three distractors),
and `quiz_options` (plain Python; returns a dict, which is merged into the program's output)."""),
    ("code", '''%%signature GenerateChoices
"""Write the three wrong options of a multiple-choice question, taken from the candidates; option A is the correct answer."""
question: str = In()
answer: str = In(desc="option A, the correct answer")
candidates: list[str] = In(desc="wrong answers of the same kind")
option_b: str = Out()
option_c: str = Out()
option_d: str = Out()'''),
    ("code", '''def same(a, b):
    return normalize_text(str(a)) == normalize_text(str(b))


def repeats(options):
    """Each option that repeats an earlier one (the correct answer comes first)."""
    seen, again = set(), []
    for option in options:
        key = normalize_text(str(option))
        if key in seen:
            again.append(str(option))
        seen.add(key)
    return again


def strays(options, answer, candidates):
    """The options that are neither the correct answer (that is `distinct`'s business) nor a candidate."""
    return [str(o) for o in options if not same(o, answer) and not any(same(o, c) for c in candidates)]


def fixes(wrong, options, candidates):
    """'replace X with Y' for each wrong option, Y a candidate no option uses yet."""
    free = [c for c in candidates if not any(same(o, c) for o in options)]
    return ", ".join(f"replace {w} with {c}" for w, c in zip(wrong, free))'''),
    ("code", '''%%assert GenerateChoices --name distinct
not repeats([answer, option_b, option_c, option_d])
f"Options repeat: {fixes(repeats([answer, option_b, option_c, option_d]), [answer, option_b, option_c, option_d], candidates)}."'''),
    ("code", '''%%assert GenerateChoices --name from_candidates
not strays([answer, option_b, option_c, option_d], answer, candidates)
f"Wrong options must come from the candidates: {fixes(strays([answer, option_b, option_c, option_d], answer, candidates), [answer, option_b, option_c, option_d], candidates)}."'''),
    ("md", """The metric is both checks at once, on the four options the program returns (the
candidates are recomputed from the example: the same list the program was given)."""),
    ("code", '''def validity(example, pred, trace=None):
    candidates = same_kind(example.answer, example.answer_type)
    return not repeats(pred.options) and not strays(pred.options, example.answer, candidates)'''),
    ("code", '''%%compile quiz --train trainset --dev devset --metric validity -o report --seed 0
same_kind >> GenerateChoices >> quiz_options'''),
    ("md", READ_REPORT),
    ("code", '''report.pass_rates()[["setting", "constraint", "n", "passed", "pass_rate", "ci_low", "ci_high",
                     "backtracks"]].round(1)'''),
    ("code", '''example = devset[0]
prediction = quiz(question=example.question, answer=example.answer, answer_type=example.answer_type)
print(example.question)
for letter, option in zip("ABCD", prediction.options):
    print(f"  {letter}. {option}")'''),
    ("md", """The paper's quiz study used other checks (valid JSON, the answer among the options,
plausible distractors judged by GPT-3.5) on HotPotQA, and its model wrote the options from
passages, not from a word bank; only *validity* is comparable in spirit, and ours is the two checks
above. The figures below sit next to each other for orientation, not as a replication."""),
    ("code", PAPER_CELL.format(
        paper='{"validity": [30.5, 70.5, 81.7, 80.5, 87.2]}',
        cols='["validity"]',
    )),
    ("md", HONESTY),
    ("code", FINDINGS),
    ("md", IN_FULL),
    ("code", IN_FULL_CELL),
    *exercises(
        """1. Make `from_candidates` **hard** (`quiz.from_candidates_hard`) and recompile. Predict first:
   which settings report failed examples now, and why does Vanilla report none?
2. Write a constraint that **no distractor is copied from the question** (e.g. the person the
   question is about; soft, `quiz.not_from_question`). What pass rate do you predict for Vanilla,
   and why?""",
        ("quiz.from_candidates_hard", "quiz.not_from_question"),
        ('''%%assert GenerateChoices --name from_candidates --hard
not strays([answer, option_b, option_c, option_d], answer, candidates)
f"Wrong options must come from the candidates: {fixes(strays([answer, option_b, option_c, option_d], answer, candidates), [answer, option_b, option_c, option_d], candidates)}."''',
         '''%%assert GenerateChoices --name not_from_question
not any(str(o).strip() and str(o).strip().lower() in question.lower() for o in [option_b, option_c, option_d])
"No option may repeat a name from the question: the wrong options are other answers to it."'''),
        '''%%compile quiz_ex --train ex_train --dev ex_dev --metric validity -o report_ex --seed 0 --settings vanilla,infer_assert
same_kind >> GenerateChoices >> quiz_options''',
    ),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_multihop_qa.ipynb": MULTIHOP,
    "03_longform_qa_citations.ipynb": LONGFORM,
    "04_quiz_gen.ipynb": QUIZGEN,
    "05_tweetgen_full.ipynb": TWEETGEN_FULL,
}


def main() -> None:
    import sys

    wanted = set(sys.argv[1:]) or set(NOTEBOOKS)  # e.g. `make_notebooks.py 04_quiz_gen.ipynb`
    for name, cells in NOTEBOOKS.items():
        if name not in wanted:
            continue
        nbformat.write(nb(cells), HERE / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
