"""The registry without IPython: building DSPy objects from specs, transactions, snapshots, staleness."""

from __future__ import annotations

import importlib
import json
import re

import dspy
import pydantic
import pytest
from dspy.utils import DummyLM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmassert_magic.definitions.store as registry_module
from lmassert_magic.engine.errors import ConstraintError
from lmassert_magic.registry import (
    ConstraintSpec,
    FieldSpec,
    PipelineSpec,
    Registry,
    RegistryError,
    SignatureSpec,
    StepRef,
    closest,
    free_names,
    get_registry,
)

TWEET = SignatureSpec(
    "GenerateTweet",
    (
        FieldSpec("question", "input", "str", line=3),
        FieldSpec("context", "input", "list[str]", "facts", line=4),
        FieldSpec("tweet", "output", "str", line=5),
    ),
    "Write a tweet.",
)
ANSWER = SignatureSpec("GenerateAnswer", (FieldSpec("question", "input"), FieldSpec("answer", "output")), None)


def no_hashtags(name="no_hashtags", target="GenerateTweet", condition='not re.search(r"#\\w+", tweet)', **kw):
    return ConstraintSpec(name, target, condition, '"Remove the hashtags."', **kw)


@pytest.fixture
def ns():
    return {"re": re, "__builtins__": __builtins__}


@pytest.fixture
def reg(ns):
    r = Registry()
    r.define_signature(TWEET, ns)
    return r


# ---------------------------------------------------------------- signatures


def test_signature_class_has_fields_types_descriptions_and_instructions(reg):
    cls = reg.signatures["GenerateTweet"].cls
    assert issubclass(cls, dspy.Signature) and cls.__name__ == "GenerateTweet"
    assert list(cls.input_fields) == ["question", "context"]
    assert list(cls.output_fields) == ["tweet"]
    assert cls.input_fields["context"].annotation == list[str]
    assert cls.input_fields["context"].json_schema_extra["desc"] == "facts"
    assert cls.instructions == "Write a tweet."


class Topic(pydantic.BaseModel):
    name: str


def test_types_resolve_against_notebook_then_typing(ns):

    ns["Topic"] = Topic
    spec = SignatureSpec("S", (FieldSpec("t", "input", "Topic"), FieldSpec("label", "output", "Literal['a', 'b']")))
    r = Registry()
    r.define_signature(spec, ns)
    cls = r.signatures["S"].cls
    assert cls.input_fields["t"].annotation is Topic
    assert str(cls.output_fields["label"].annotation) == "typing.Literal['a', 'b']"


def test_unknown_type_names_the_line_and_the_closest_name(ns):
    spec = SignatureSpec("S", (FieldSpec("q", "input", "str"), FieldSpec("label", "output", "Litral['a']", line=4)))
    with pytest.raises(RegistryError, match=r"^line 4: field 'label': unknown type name 'Litral'.*'Literal'"):
        Registry().define_signature(spec, ns)


def test_untyped_fields_default_to_str_and_instructions_to_dspys(ns):
    r = Registry()
    r.define_signature(ANSWER, ns)
    cls = r.signatures["GenerateAnswer"].cls
    assert cls.input_fields["question"].annotation is str
    assert "question" in cls.instructions  # DSPy's default instructions mention the fields


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        (SignatureSpec("S", (FieldSpec("q", "input"),)), "no output field"),
        (SignatureSpec("S", (FieldSpec("a", "output"),)), "no input field"),
        (SignatureSpec("S", (FieldSpec("q", "input"), FieldSpec("q", "output", line=3))),
         "line 3: field 'q' is defined"),
        (SignatureSpec("S", (FieldSpec("feedback", "input", line=2), FieldSpec("a", "output"))), "reserved"),
        (SignatureSpec("S", (FieldSpec("q", "input"), FieldSpec("a", "output"), FieldSpec("past_a", "input", line=4))),
         "line 4: 'past_a' is reserved"),
        (SignatureSpec("S", (FieldSpec("q", "input"), FieldSpec("reasoning", "output", line=3)), cot=True),
         "line 3: --cot adds"),
        (SignatureSpec("forward", (FieldSpec("q", "input"), FieldSpec("a", "output"))), "clashes with a dspy.Module"),
        (SignatureSpec("class", (FieldSpec("q", "input"), FieldSpec("a", "output"))), "not a valid Python name"),
    ],
)
def test_bad_signatures_are_rejected_and_change_nothing(reg, ns, spec, pattern):
    before = reg.snapshot_json()
    with pytest.raises(RegistryError, match=pattern):
        reg.define_signature(spec, ns)
    assert reg.snapshot_json() == before


def test_identical_redefinition_keeps_the_version_and_changed_one_bumps_it(reg, ns):
    v1 = reg.signatures["GenerateTweet"].version
    same = reg.define_signature(TWEET, ns)
    assert not same.changed and reg.signatures["GenerateTweet"].version == v1
    changed = SignatureSpec(TWEET.name, TWEET.fields, "Write a short tweet.")
    out = reg.define_signature(changed, ns)
    assert out.changed and reg.signatures["GenerateTweet"].version > v1


def test_name_shared_across_kinds_is_rejected(reg, ns):
    reg.define_constraint(no_hashtags(), ns)
    spec = SignatureSpec("no_hashtags", (FieldSpec("q", "input"), FieldSpec("a", "output")))
    with pytest.raises(RegistryError, match="already a registered constraint"):
        reg.define_signature(spec, ns)
    with pytest.raises(RegistryError, match="already a registered signature"):
        reg.define_constraint(no_hashtags(name="GenerateTweet"), ns)


# ---------------------------------------------------------------- constraints


def test_free_names_skip_names_bound_inside_the_expression():
    assert free_names("all(w not in tweet for w in banned) and (n := len(tweet)) < limit") == {
        "all": 1, "banned": 1, "len": 1, "limit": 1, "tweet": 1}
    assert free_names("(lambda x: x + y)(tweet)") == {"tweet": 1, "y": 1}
    assert free_names("(a and\n b)") == {"a": 1, "b": 2}


def test_unknown_name_in_condition_names_cell_line_and_closest_field(reg, ns):
    spec = ConstraintSpec("c", "GenerateTweet", "(len(tweet) < 280 and\n 'x' not in tweeet)", None, line=2)
    before = reg.snapshot_json()
    with pytest.raises(RegistryError, match=r"^line 3: unknown name 'tweeet'.*did you mean 'tweet'\?"):
        reg.define_constraint(spec, ns)
    assert reg.snapshot_json() == before


def test_unknown_target_suggests_the_closest_signature(reg, ns):
    with pytest.raises(RegistryError, match="unknown signature 'GenerateTweat'; did you mean 'GenerateTweet'"):
        reg.define_constraint(no_hashtags(target="GenerateTweat"), ns)


def test_condition_sees_fields_notebook_names_at_check_time_and_builtins(reg, ns):
    ns["banned"] = ["spam"]
    reg.define_constraint(ConstraintSpec("c", "GenerateTweet", "all(w not in tweet for w in banned)", None), ns)
    constraint = reg.constraints["c"].constraint
    assert constraint.check({"question": "q", "context": [], "tweet": "hello"}) is True
    ns["banned"] = ["hello"]  # redefined in the notebook after the %%assert cell
    assert constraint.check({"question": "q", "context": [], "tweet": "hello"}) is False


def test_a_notebook_helper_deleted_after_the_assert_cell_raises_constraint_error(reg, ns):
    ns["is_short"] = lambda text: len(text) < 5
    reg.define_constraint(ConstraintSpec("c", "GenerateTweet", "is_short(tweet)", None), ns)
    constraint = reg.constraints["c"].constraint
    assert constraint.check({"tweet": "hi"}) is True
    del ns["is_short"]
    with pytest.raises(ConstraintError, match="NameError"):
        constraint.check({"tweet": "hi"})


def test_message_f_string_is_formatted_over_the_fields(reg, ns):
    spec = ConstraintSpec("c", "GenerateTweet", "len(tweet) <= 5", 'f"{len(tweet)} chars is too long: {tweet!r}"')
    reg.define_constraint(spec, ns)
    constraint = reg.constraints["c"].constraint
    assert constraint.feedback({"tweet": "abcdefg"}) == "7 chars is too long: 'abcdefg'"


def test_lm_judge_is_available_without_import_and_a_notebook_name_shadows_it(reg, ns):
    spec = ConstraintSpec("judge", "GenerateTweet", 'lm_judge("Is it engaging?", tweet=tweet)', None, timeout=None)
    reg.define_constraint(spec, ns)
    constraint = reg.constraints["judge"].constraint
    lm = DummyLM([{"answer": "true"}])
    with dspy.context(lm=lm):
        assert constraint.check({"tweet": "wow"}) is True
    assert "Is it engaging?" in lm.history[-1]["messages"][-1]["content"]
    ns["lm_judge"] = lambda question, **fields: False
    assert constraint.check({"tweet": "wow"}) is False


def test_constraint_gets_a_time_limit_by_default(reg, ns):
    reg.define_constraint(no_hashtags(), ns)
    assert reg.constraints["no_hashtags"].constraint.timeout == 120.0


def test_next_constraint_name_uses_the_smallest_free_index(reg, ns):
    assert reg.next_constraint_name("GenerateTweet") == "GenerateTweet_1"
    reg.define_constraint(no_hashtags(name="GenerateTweet_1"), ns)
    reg.define_constraint(no_hashtags(name="GenerateTweet_3"), ns)
    assert reg.next_constraint_name("GenerateTweet") == "GenerateTweet_2"


def test_a_condition_reading_no_output_gets_a_note(reg, ns):
    out = reg.define_constraint(ConstraintSpec("c", "GenerateTweet", "len(question) > 0", None), ns)
    assert any("reads no output field" in n for n in out.notes)


def test_replaces_removes_the_previous_constraint_of_the_cell_atomically(reg, ns):
    reg.define_constraint(no_hashtags(name="old"), ns)
    reg.define_constraint(no_hashtags(name="new"), ns, replaces="old")
    assert set(reg.constraints) == {"new"}


# ---------------------------------------------------------------- pipelines, compile records, staleness


def _retrieve(question):
    return [f"fact about {question}"]


def test_plan_builds_a_pipeline_and_skips_constraints_on_unused_signatures(reg, ns):
    ns["retrieve"] = _retrieve
    reg.define_signature(ANSWER, ns)
    reg.define_constraint(no_hashtags(), ns)
    reg.define_constraint(ConstraintSpec("short", "GenerateAnswer", "len(answer) < 10", None), ns)
    plan = reg.plan_pipeline(PipelineSpec("p", (StepRef("retrieve"), StepRef("GenerateTweet"))), ns,
                             example_inputs=["question"])
    assert [n for n, _ in plan.program.named_predictors()] == ["GenerateTweet"]
    assert [c.name for c in plan.constraints] == ["no_hashtags"]
    assert plan.attached == {"no_hashtags": ["GenerateTweet"]}
    assert plan.skipped == ["constraint short targets GenerateAnswer, which p does not use; skipped"]


def test_plan_reports_unknown_steps_and_wiring_problems_with_lines(reg, ns):
    ns["retrieve"] = _retrieve
    with pytest.raises(RegistryError, match=r"^line 2: unknown step 'retreive'.*did you mean 'retrieve'"):
        reg.plan_pipeline(PipelineSpec("p", (StepRef("retreive", 2), StepRef("GenerateTweet", 2))), ns)
    with pytest.raises(RegistryError, match=r"^line 3: GenerateTweet needs input field\(s\) context"):
        reg.plan_pipeline(PipelineSpec("p", (StepRef("GenerateTweet", 3),)), ns, example_inputs=["question"])


def test_plan_rebuilds_constraints_against_the_current_signature(reg, ns):
    reg.define_constraint(no_hashtags(), ns)
    renamed = SignatureSpec("GenerateTweet", (FieldSpec("question", "input"), FieldSpec("post", "output")), "x")
    out = reg.define_signature(renamed, ns)
    assert any("reads field(s) tweet" in n for n in out.notes)
    with pytest.raises(RegistryError, match="constraint no_hashtags no longer fits"):
        reg.plan_pipeline(PipelineSpec("p", (StepRef("GenerateTweet"),)), ns)


def _record(reg, ns, name="p"):
    ns["retrieve"] = _retrieve
    plan = reg.plan_pipeline(PipelineSpec(name, (StepRef("retrieve"), StepRef("GenerateTweet"))), ns)
    reg.record_compile(plan, result=None, program=plan.program, options={"train": "t"})
    return plan


def test_changing_a_signature_marks_programs_built_from_it_stale(reg, ns):
    _record(reg, ns)
    assert reg.programs["p"].stale is None
    out = reg.define_signature(TWEET, ns)  # same meaning: stays fresh
    assert reg.programs["p"].stale is None and not out.notes
    out = reg.define_signature(SignatureSpec(TWEET.name, TWEET.fields, "Other instructions."), ns)
    assert reg.programs["p"].stale == "signature GenerateTweet was redefined"
    assert any("'p'" in n and "stale" in n for n in out.notes)


def test_adding_a_constraint_marks_programs_using_its_target_stale(reg, ns):
    _record(reg, ns)
    reg.define_constraint(no_hashtags(), ns)
    assert reg.programs["p"].stale == "constraint no_hashtags on GenerateTweet was added"


def test_record_compile_is_stale_if_a_signature_changed_while_compiling(reg, ns):
    ns["retrieve"] = _retrieve
    plan = reg.plan_pipeline(PipelineSpec("p", (StepRef("retrieve"), StepRef("GenerateTweet"))), ns)
    reg.define_signature(SignatureSpec(TWEET.name, TWEET.fields, "Changed."), ns)
    reg.record_compile(plan, result=None, program=plan.program, options={})
    assert reg.programs["p"].stale == "signature GenerateTweet changed while it compiled"


def test_remove_signature_takes_its_constraints_and_marks_programs_stale(reg, ns):
    reg.define_constraint(no_hashtags(), ns)
    _record(reg, ns)
    notes = reg.remove("GenerateTweet")
    assert "removed constraint no_hashtags (it targeted GenerateTweet)" in notes
    assert not reg.signatures and not reg.constraints
    assert reg.programs["p"].stale == "signature GenerateTweet was removed"
    with pytest.raises(RegistryError, match="nothing is registered as 'pp'; did you mean 'p'"):
        reg.remove("pp")


def test_reset_forgets_everything_but_keeps_counting_revisions(reg, ns):
    rev = reg.revision
    reg.reset()
    assert reg.names() == [] and reg.revision > rev


# ---------------------------------------------------------------- snapshots and the singleton


def _history(ns, *, tweet=TWEET, constraint=None, options=(("train", "t"), ("metric", "m")), programs=("p", "q")):
    """A fresh registry after a fixed sequence of changes; the keywords vary one definition or one order."""
    ns["retrieve"] = _retrieve
    r = Registry()
    r.define_signature(tweet, ns)
    r.define_signature(ANSWER, ns)
    r.define_constraint(constraint or no_hashtags(), ns)
    for name in programs:
        plan = r.plan_pipeline(PipelineSpec(name, (StepRef("retrieve"), StepRef("GenerateTweet"))), ns)
        r.record_compile(plan, result=None, program=plan.program, options=dict(options))
    return r


def _canonical(text):
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_snapshot_records_what_was_written(reg, ns):
    reg.define_constraint(no_hashtags(), ns)
    _record(reg, ns)
    snap = reg.snapshot()
    assert snap["signatures"]["GenerateTweet"]["fields"][1] == {
        "name": "context", "role": "input", "type": "list[str]", "desc": "facts", "prefix": None, "line": 4}
    assert snap["constraints"]["no_hashtags"]["message"] == '"Remove the hashtags."'
    assert snap["programs"]["p"]["steps"][0]["kind"] == "callable"
    assert snap["programs"]["p"]["options"] == {"train": "t"}


def test_snapshot_is_plain_json_and_equal_histories_give_equal_text(ns):
    first, second = _history(ns), _history(ns)
    text = first.snapshot_json()
    # Plain JSON values only: nothing reached the `default=repr` fallback, so the text reads back as the snapshot.
    assert json.loads(text) == first.snapshot()
    assert text == second.snapshot_json()  # two registries, one history: byte-for-byte equal (no ids, no addresses)
    # Reset and rebuild: the same text apart from the revision, which keeps counting.
    revision = first.revision
    first.reset()
    ns["retrieve"] = _retrieve
    first.define_signature(TWEET, ns)
    first.define_signature(ANSWER, ns)
    first.define_constraint(no_hashtags(), ns)
    for name in ("p", "q"):
        plan = first.plan_pipeline(PipelineSpec(name, (StepRef("retrieve"), StepRef("GenerateTweet"))), ns)
        first.record_compile(plan, result=None, program=plan.program, options={"train": "t", "metric": "m"})
    rebuilt = json.loads(first.snapshot_json())
    assert rebuilt.pop("revision") > revision
    expected = json.loads(text)
    expected.pop("revision")
    assert rebuilt == expected


def test_snapshot_does_not_depend_on_insertion_order(ns):
    # Programs and compile options carry no version number, so only their insertion order differs here.
    forward = _history(ns, options=(("train", "t"), ("metric", "m")), programs=("p", "q"))
    backward = _history(ns, options=(("metric", "m"), ("train", "t")), programs=("q", "p"))
    assert list(forward.programs) != list(backward.programs)  # the registries really were filled differently
    assert forward.snapshot_json() == backward.snapshot_json()
    assert json.dumps(forward.snapshot()) == json.dumps(backward.snapshot())  # snapshot() itself is ordered too
    # The text is canonical: sorted keys and compact separators at every level.
    text = forward.snapshot_json()
    assert text == _canonical(text)
    assert list(json.loads(text)) == sorted(json.loads(text))


@pytest.mark.parametrize(
    "change",
    [
        {"tweet": SignatureSpec(TWEET.name, TWEET.fields, "Write a short tweet.")},
        {"tweet": SignatureSpec(TWEET.name, TWEET.fields, TWEET.instructions, cot=True)},
        {"tweet": SignatureSpec(TWEET.name, (*TWEET.fields[:2], FieldSpec("tweet", "output", "str", "140 chars",
                                                                          line=5)), TWEET.instructions)},
        {"tweet": SignatureSpec(TWEET.name, (TWEET.fields[0], FieldSpec("context", "input", "str", "facts", line=4),
                                             TWEET.fields[2]), TWEET.instructions)},
        {"constraint": no_hashtags(condition='"#" not in tweet')},
        {"constraint": no_hashtags(hard=True)},
        {"constraint": no_hashtags(max_backtracks=1)},
        {"options": (("train", "t"), ("metric", "other"))},
    ],
    ids=["instructions", "cot", "field-desc", "field-type", "condition", "hard", "backtracks", "options"],
)
def test_a_changed_definition_changes_the_snapshot(ns, change):
    base, changed = _history(ns), _history(ns, **change)
    assert changed.revision == base.revision  # same number of changes: only the definition differs
    assert changed.snapshot_json() != base.snapshot_json()


def test_failed_transaction_leaves_the_state_untouched(reg, ns):
    before = reg.snapshot_json()
    with pytest.raises(RuntimeError), reg.transaction() as tx:
        tx.state.signatures.clear()
        tx.changed = True
        raise RuntimeError("boom")
    assert reg.snapshot_json() == before


def test_get_registry_is_a_singleton_that_survives_reloading_the_module():
    first = get_registry()
    assert get_registry() is first
    saved = dict(vars(registry_module))
    try:
        reloaded = importlib.reload(registry_module)
        assert reloaded.Registry is not saved["Registry"]  # the module really was re-executed
        assert reloaded.get_registry() is first
    finally:  # put the original classes back for the other tests
        vars(registry_module).clear()
        vars(registry_module).update(saved)


def test_closest_prefers_case_insensitive_then_similar_names():
    assert closest("generatetweet", ["GenerateTweet", "Other"]) == "GenerateTweet"
    assert closest("tweeet", ["tweet", "question"]) == "tweet"
    assert closest("zzz", ["tweet"]) is None


# ---------------------------------------------------------------- property: failures change nothing


def _field(name, role, typ=""):
    return FieldSpec(name, role, typ, line=3)


VALID_SIGS = [TWEET, ANSWER, SignatureSpec(TWEET.name, TWEET.fields, "Changed instructions.")]
BAD_SIGS = [
    SignatureSpec("Bad", (_field("q", "input"),)),
    SignatureSpec("Bad", (_field("q", "input"), _field("a", "output", "Nope[int]"))),
    SignatureSpec("no_hashtags", (_field("q", "input"), _field("a", "output"))),
    SignatureSpec("Bad", (_field("feedback", "input"), _field("a", "output"))),
]
VALID_CONS = [no_hashtags(), no_hashtags(name="short", condition="len(tweet) < 280"),
              ConstraintSpec("ans", "GenerateAnswer", "answer != ''", "f'empty {answer}'")]
BAD_CONS = [no_hashtags(target="Missing"), no_hashtags(condition="undefined_helper(tweet)"),
            no_hashtags(name="GenerateTweet"), no_hashtags(name="1bad"),
            ConstraintSpec("m", "GenerateTweet", "True", "42")]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("sig"), st.sampled_from(VALID_SIGS + BAD_SIGS)),
        st.tuples(st.just("con"), st.sampled_from(VALID_CONS + BAD_CONS)),
        st.tuples(st.just("remove"), st.sampled_from(["GenerateTweet", "no_hashtags", "short", "missing", "p"])),
        st.tuples(st.just("plan"), st.sampled_from([("retrieve", "GenerateTweet"), ("GenerateAnswer",),
                                                    ("nothing",)])),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_property_a_failing_change_leaves_the_registry_byte_for_byte_unchanged(ops, ns):
    ns["retrieve"] = _retrieve
    reg = Registry()
    for kind, arg in ops:
        before = reg.snapshot_json()
        try:
            if kind == "sig":
                reg.define_signature(arg, ns)
            elif kind == "con":
                reg.define_constraint(arg, ns)
            elif kind == "remove":
                reg.remove(arg)
            else:
                plan = reg.plan_pipeline(PipelineSpec("p", tuple(StepRef(s) for s in arg)), ns)
                reg.record_compile(plan, result=None, program=plan.program, options={})
        except RegistryError:
            assert reg.snapshot_json() == before
        else:
            assert reg.snapshot_json() != before  # every success is visible (at least the revision)
