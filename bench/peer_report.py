"""From checkpoint rows to bench/peers.json, bench/RESULTS.md and bench/peers.png.

Every number comes from the rows; every sentence is generated from the numbers (who wins, who loses and by
how much, whether the goal of issue #16 is met, what to pick when), so a re-run can never disagree with its
text. Rates are shares of examples with Wilson 95% intervals; comparisons with this package are paired by
example (`lmassert_magic.engine.stats.paired_difference`), and a difference it cannot tell from 0 is called
a tie.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from peer_programs import ASSERTION_SYSTEMS, BESTOFN, NONE, OURS, REFINE, SYSTEMS
from peer_tasks import CHECKS, STUDIES

from lmassert_magic.engine.defaults import RETRY_TEMPERATURE
from lmassert_magic.engine.stats import PairedDiff, mean_interval, paired_difference, rate_of

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
TITLE = "# Benchmark results"
GOAL_POINTS = 5  # issue #16: at most 5 points below, at the lower end of the paired 95% interval
QUALITY = {
    "tweetgen": "the tweet states the gold answer and has at most 280 characters",
    "multihop": "the answer matches the gold answer after normalisation, or contains it",
}
COUNTS = ("lm_calls", "judge_calls", "cache_hits", "judge_cache_hits", "tokens", "seconds")


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _ci(low: float, high: float) -> list[float | None]:
    return [_num(low), _num(high)]


def _per_example(rows: dict[str, dict], scores: dict[str, dict], ids: Sequence[str], study: str) -> dict[str, list]:
    """Per-example vectors of one system: verdicts, all-pass, quality and costs."""
    names = list(CHECKS[study])
    out: dict[str, list] = {"all": [], "quality": [], "errors": [], **{f"c:{n}": [] for n in names},
                            **{k: [] for k in COUNTS}}
    for i in ids:
        verdicts = scores[i]["verdicts"]
        out["all"].append(int(all(verdicts.get(n, False) for n in names)))
        out["quality"].append(int(scores[i]["quality"]))
        for n in names:
            out[f"c:{n}"].append(int(bool(verdicts.get(n, False))))
        run = rows.get(i, {})
        out["errors"].append(int(bool(run.get("error"))))
        for k in COUNTS:
            out[k].append(float(run.get(k) or 0))
    return out


def _diff_fields(prefix: str, diff: PairedDiff | None) -> dict[str, Any]:
    if diff is None:
        return {prefix: None, f"{prefix}_ci": None, f"{prefix}_noise": None}
    return {prefix: _num(diff.diff), f"{prefix}_ci": _ci(diff.ci_low, diff.ci_high),
            f"{prefix}_noise": not diff.distinguishable}


def build_report(rows: list[dict], *, seed: int, versions: dict[str, str], model: str | None = None) -> dict[str, Any]:
    """peers.json: one record per study and system, the goal per study, the run's seed and versions."""
    runs: dict[tuple, dict[str, dict]] = {}
    scores: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row.get("study"), row.get("system"))
        if row.get("kind") == "run":
            runs.setdefault(key, {})[row["id"]] = row
        elif row.get("kind") == "score":
            scores.setdefault(key, {})[row["id"]] = row
    records, goals, vectors = [], {}, {}
    studies, in_progress = _complete_studies(scores)
    for study in studies:
        systems = [s for s in SYSTEMS if (study, s) in scores]
        for system in systems:
            ids = list(scores[(study, system)])
            vectors[(study, system)] = (ids, _per_example(runs.get((study, system), {}), scores[(study, system)],
                                                          ids, study))
        best = max(systems, key=lambda s: (sum(vectors[(study, s)][1]["all"]) / max(1, len(vectors[(study, s)][0])),
                                           s == OURS))
        for system in systems:
            record = _record(study, system, vectors)
            record["best_system"] = best
            record.update(_diff_fields("all_constraints_diff_vs_best",
                                       _paired(vectors, study, best, system, "all") if system != best else None))
            records.append(record)
        goals[study] = _goal(study, [r for r in records if r["study"] == study], vectors)
    return {"seed": seed, "versions": versions, "model": model, "studies": studies, "records": records,
            "goal": goals, "in_progress": in_progress}


def _complete_studies(scores: dict[tuple, dict[str, dict]]) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Studies every system of the run has scored on the same examples, and the others' counts so far.

    An interrupted run leaves a study with systems at different sizes; comparing them would pair a system
    with one that has not run yet, so such a study is reported as in progress, not as a table.
    """
    seen = [s for s in STUDIES if any(k[0] == s for k in scores)]
    systems = {system for _, system in scores}
    complete, in_progress = [], {}
    for study in seen:
        ids = {system: frozenset(scores.get((study, system), {})) for system in SYSTEMS if system in systems}
        if all(ids.values()) and len(set(ids.values())) == 1:
            complete.append(study)
        else:
            in_progress[study] = {system: len(ids.get(system, ())) for system in SYSTEMS}
    return complete, in_progress


def _paired(vectors: dict, study: str, a: str, b: str, key: str) -> PairedDiff | None:
    """b - a on the examples both have, paired by example id."""
    if (study, a) not in vectors or (study, b) not in vectors:
        return None
    ids_a, va = vectors[(study, a)]
    ids_b, vb = vectors[(study, b)]
    index_b = {i: k for k, i in enumerate(ids_b)}
    common = [(k, index_b[i]) for k, i in enumerate(ids_a) if i in index_b]
    return paired_difference([va[key][k] for k, _ in common], [vb[key][j] for _, j in common], name_a=a, name_b=b)


def _record(study: str, system: str, vectors: dict) -> dict[str, Any]:
    ids, v = vectors[(study, system)]
    n = len(ids)
    all_pass, quality = rate_of(sum(v["all"]), n), rate_of(sum(v["quality"]), n)
    constraints = {}
    for name in CHECKS[study]:
        r = rate_of(sum(v[f"c:{name}"]), n)
        failing = [calls for passed, calls in zip(v[f"c:{name}"], v["lm_calls"]) if not passed]
        # what the examples this system fails on cost it: retries spent in vain show up here
        constraints[name] = {"rate": _num(r.rate), "ci": _ci(r.ci_low, r.ci_high), "failing": len(failing),
                             "lm_calls_when_failing": sum(failing) / len(failing) if failing else None}
    mean = (lambda k: sum(v[k]) / n if n else None)  # noqa: E731
    vs_ours = system != OURS
    record = {
        "study": study, "system": system, "n": n, "errors": sum(v["errors"]),
        "all_constraints": _num(all_pass.rate), "all_constraints_ci": _ci(all_pass.ci_low, all_pass.ci_high),
        "quality": _num(quality.rate), "quality_ci": _ci(quality.ci_low, quality.ci_high),
        "constraints": constraints,
        "lm_calls_per_example": mean("lm_calls"), "lm_calls_ci": _ci(*mean_interval(v["lm_calls"])),
        "judge_calls_per_example": mean("judge_calls"), "cache_hits_per_example": mean("cache_hits"),
        "judge_cache_hits_per_example": mean("judge_cache_hits"), "tokens_per_example": mean("tokens"),
        "seconds_per_example": mean("seconds"), "max_lm_calls": max(v["lm_calls"], default=None),
    }
    for key, name in (("all", "all_constraints"), ("quality", "quality"), ("lm_calls", "lm_calls")):
        record.update(_diff_fields(f"{name}_diff_vs_ours", _paired(vectors, study, OURS, system, key) if vs_ours
                                   else None))
    record.update(_diff_fields("quality_diff_vs_no_assertions",
                               _paired(vectors, study, NONE, system, "quality") if system != NONE else None))
    return record


def _goal(study: str, records: list[dict], vectors: dict) -> dict[str, Any]:
    """Issue #16's three conditions for this package on one study, with the margins."""
    by = {r["system"]: r for r in records}
    if OURS not in by:
        return {}
    ours = by[OURS]
    others = {s: by[s]["lm_calls_per_example"] for s in ASSERTION_SYSTEMS if s in by and s != OURS}
    cheaper = sorted((c, s) for s, c in others.items() if c <= ours["lm_calls_per_example"])
    best = ours["best_system"]
    gap = _paired(vectors, study, best, OURS, "all") if best != OURS else None
    quality = _paired(vectors, study, NONE, OURS, "quality")

    def within(diff: PairedDiff | None) -> dict[str, Any]:
        if diff is None:
            return {"met": True, "diff": 0.0, "ci": [0.0, 0.0], "missed_by_points": 0.0}
        low = diff.ci_low if math.isfinite(diff.ci_low) else diff.diff
        return {"met": low * 100 >= -GOAL_POINTS, "diff": _num(diff.diff), "ci": _ci(diff.ci_low, diff.ci_high),
                "missed_by_points": max(0.0, round(-GOAL_POINTS - low * 100, 1)), "n": diff.n}

    return {
        "fewer_calls": {"met": not cheaper, "ours": ours["lm_calls_per_example"], "others": others,
                        "not_more_than_ours": [s for _, s in cheaper],
                        "judge": {s: by[s]["judge_calls_per_example"] for s in [OURS, *others]},
                        "cache_hits": {s: by[s]["cache_hits_per_example"] for s in [OURS, *others]},
                        "errors": {s: [by[s]["errors"], by[s]["n"]] for s in [OURS, *others]}},
        "all_constraints": {"best": best, **within(gap)},
        "quality_vs_no_assertions": within(quality) if quality is not None else None,
    }


# ---------------------------------------------------------------- RESULTS.md


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _rate(r: dict, key: str) -> str:
    low, high = r[f"{key}_ci"]
    return f"{_pct(r[key])} ({_pct(low)}–{_pct(high)})" if low is not None else _pct(r[key])


def _pp(share: float | None, digits: int = 0) -> str:
    """A signed difference of shares in points (0.125 -> '+12'); never '-0'."""
    if share is None:
        return "n/a"
    r = round(share * 100, digits)
    return f"{0:.{digits}f}" if r == 0 else f"{r:+.{digits}f}"


def _points(x: float | None) -> str:
    return "n/a" if x is None else f"{abs(x) * 100:.0f} points"


def _signed_points(r: dict, prefix: str) -> str:
    if r.get(prefix) is None:
        return "—"
    low, high = r[f"{prefix}_ci"]
    return f"{_pp(r[prefix], 1)} ({_pp(low)} to {_pp(high)})"


def _table(study: str, records: list[dict]) -> list[str]:
    names = list(CHECKS[study])
    head = ["system", "all constraints (95% CI)", "vs ours, points (95% CI)", *names, "quality (95% CI)",
            "LM calls/ex", "judge calls/ex", "cache hits/ex", "tokens/ex", "s/ex", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r["system"], _rate(r, "all_constraints"), _signed_points(r, "all_constraints_diff_vs_ours"),
                 *[_pct(r["constraints"][n]["rate"]) for n in names], _rate(r, "quality"),
                 f"{r['lm_calls_per_example']:.2f}", f"{r['judge_calls_per_example']:.2f}",
                 f"{r['cache_hits_per_example']:.2f}", f"{r['tokens_per_example']:.0f}",
                 f"{r['seconds_per_example']:.1f}", str(r["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(ours_minus_other: float | None, noise: bool | None) -> str:
    if noise or not ours_minus_other:
        return "ties"
    return "wins" if ours_minus_other > 0 else "loses"


def _comparisons(study: str, records: list[dict]) -> list[str]:
    by = {r["system"]: r for r in records}
    ours = by.get(OURS)
    if ours is None:
        return ["This package was not run on this study."]
    lines = []
    for r in records:
        if r["system"] == OURS or r.get("all_constraints_diff_vs_ours") is None:
            continue
        d = -r["all_constraints_diff_vs_ours"]
        low, high = (-r["all_constraints_diff_vs_ours_ci"][1], -r["all_constraints_diff_vs_ours_ci"][0])
        verb = _verdict(d, r["all_constraints_diff_vs_ours_noise"])
        where = f"{_pct(ours['all_constraints'])} vs {_pct(r['all_constraints'])} of examples pass every constraint"
        if verb == "ties":
            lines.append(f"* {OURS} ties with {r['system']}: {where}; the difference ({_pp(d)} points, 95% CI "
                         f"{_pp(low)} to {_pp(high)}) is noise at n = {r['n']}.")
        else:
            prep = "against" if verb == "wins" else "to"
            lines.append(f"* {OURS} {verb} {prep} {r['system']} by {_points(d)}: {where} (95% CI of the "
                         f"difference {_pp(low)} to {_pp(high)} points).")
    for r in records:
        if r["system"] == OURS or r.get("lm_calls_diff_vs_ours") is None:
            continue
        d = -r["lm_calls_diff_vs_ours"]  # ours - other
        low, high = (-r["lm_calls_diff_vs_ours_ci"][1], -r["lm_calls_diff_vs_ours_ci"][0])
        if d == 0:
            word = "as many LM calls per example as"
        else:
            word = "fewer LM calls per example than" if d < 0 else "more LM calls per example than"
        spread = "the same on every example" if low == high else f"95% CI {low:+.2f} to {high:+.2f}"
        noise = f"; not told apart from noise at n = {r['n']}" if r["lm_calls_diff_vs_ours_noise"] and d else ""
        lines.append(f"* {OURS} makes {word} {r['system']}: {ours['lm_calls_per_example']:.2f} vs "
                     f"{r['lm_calls_per_example']:.2f} (paired difference {d:+.2f}, {spread}{noise}).")
    none = by.get(NONE)
    if none is not None and ours.get("quality_diff_vs_no_assertions") is not None:
        d = ours["quality_diff_vs_no_assertions"]
        low, high = ours["quality_diff_vs_no_assertions_ci"]
        if ours["quality_diff_vs_no_assertions_noise"]:
            how = "the difference is noise"
        else:
            how = f"{'higher' if d > 0 else 'lower'} by {_points(d)}"
        lines.append(f"* Quality ({QUALITY[study]}): {OURS} {_pct(ours['quality'])} against {_pct(none['quality'])} "
                     f"without assertions; {how} (95% CI {_pp(low)} to {_pp(high)} points).")
    lines += _why(study, records)
    return lines


def _why(study: str, records: list[dict]) -> list[str]:
    """Where our calls go, and on which constraint a better system beats us most."""
    by = {r["system"]: r for r in records}
    ours = by[OURS]
    lines = [f"* Where this package's calls go: {ours['judge_calls_per_example']:.2f} of its "
             f"{ours['lm_calls_per_example']:.2f} LM calls per example are judge calls, and "
             f"{ours['cache_hits_per_example']:.2f} more calls per example were answered by the cache."]
    best = by[ours["best_system"]]
    if best["system"] != OURS and (best["all_constraints"] or 0) > (ours["all_constraints"] or 0):
        gaps = {n: (best["constraints"][n]["rate"] or 0) - (ours["constraints"][n]["rate"] or 0) for n in CHECKS[study]}
        name = max(gaps, key=lambda n: gaps[n])
        if gaps[name] > 0:
            lines.append(f"* The gap to {best['system']} is largest on `{name}`: "
                         f"{_pct(ours['constraints'][name]['rate'])} here against "
                         f"{_pct(best['constraints'][name]['rate'])}.")
            lines += _lost_examples(ours, best, name)
    errors = [r for r in records if r["errors"]]
    for r in errors:
        lines.append(f"* {r['system']} raised on {r['errors']} of {r['n']} examples (counted as failing everything).")
    return lines


#: How a peer that beats this package searches, for the sentence that says why it finds what retries did not.
SEARCH = {
    BESTOFN: "re-runs the whole program, from its first step, at temperature 1.0 on every attempt (dspy.BestOfN "
             "sets it), and keeps the best run",
    REFINE: "re-runs the whole program, from its first step, at temperature 1.0 with advice from an extra LM call",
}


def _lost_examples(ours: dict, best: dict, name: str) -> list[str]:
    """What the examples failing `name` cost this package, and how the better system searches instead."""
    part = ours["constraints"][name]
    if not part.get("failing") or part.get("lm_calls_when_failing") is None:
        return []
    spent = part["lm_calls_when_failing"] > ours["lm_calls_per_example"]
    lines = [f"* On the {part['failing']} examples whose final output fails `{name}` here, this package made "
             f"{part['lm_calls_when_failing']:.2f} LM calls per example ({ours['lm_calls_per_example']:.2f} over all "
             f"examples, at most {ours['max_lm_calls']:.0f} on one): "
             + ("its retries were spent and the retried step still failed." if spent
                else "it did not spend more calls on them than on the others.")]
    if best["system"] in SEARCH:
        lines.append(f"* {best['system']} {SEARCH[best['system']]}; this package retries only the step that "
                     f"failed, with the constraint's feedback, at its retry temperature ({RETRY_TEMPERATURE:g} when "
                     "the LM's own is 0), so a model that repeats itself under feedback keeps failing there.")
    return lines


def _goal_lines(goal: dict) -> list[str]:
    if not goal:
        return []
    calls = goal["fewer_calls"]
    if calls["met"]:
        lines = [f"* Fewer LM calls per example than every other assertion system: **met** ({calls['ours']:.2f} "
                 "against " + ", ".join(f"{s} {c:.2f}" for s, c in calls["others"].items()) + ")."]
    else:
        lines = ["* Fewer LM calls per example than every other assertion system: **missed**: " + "; ".join(
            _cheaper_line(calls, s) for s in calls["not_more_than_ours"]) + "."]
    passing = goal["all_constraints"]
    if passing["best"] == OURS:
        lines.append(f"* All constraints within {GOAL_POINTS} points of the best system: **met** (this package is "
                     "the best system).")
    else:
        lines.append(_within_line(f"All constraints within {GOAL_POINTS} points of the best system "
                                  f"({passing['best']})", passing))
    if goal.get("quality_vs_no_assertions"):
        lines.append(_within_line(f"Quality within {GOAL_POINTS} points of no assertions",
                                  goal["quality_vs_no_assertions"]))
    return lines


def _cheaper_line(calls: dict, system: str) -> str:
    """How a cheaper system's calls split into program and judge calls against ours, and what its cache answered."""
    mine, theirs = calls["ours"], calls["others"][system]
    judge_mine, judge_theirs = calls["judge"][OURS], calls["judge"][system]
    line = (f"{system} makes fewer LM calls ({theirs:.2f} against {mine:.2f} per example: program calls "
            f"{theirs - judge_theirs:.2f} against {mine - judge_mine:.2f}, judge calls {judge_theirs:.2f} against "
            f"{judge_mine:.2f})")
    errors, n = (calls.get("errors") or {}).get(system) or (0, 0)
    if errors:
        line += f"; it raised on {errors} of {n} examples, which ends an example early"
    hits = (calls.get("cache_hits") or {}).get(system) or 0.0
    if hits > 0:
        line += (f", and its cache answered {hits:.2f} more requests per example (repeats of a request it had "
                 f"made; {theirs + hits:.2f} requests in all)")
    return line


def _within_line(label: str, part: dict) -> str:
    low, high = part["ci"]
    span = f"difference {_pp(part['diff'], 1)} points, 95% CI {_pp(low)} to {_pp(high)}"
    if part["met"]:
        return f"* {label}: **met** ({span})."
    line = f"* {label}: **missed** by {part['missed_by_points']:.1f} points ({span})"
    if part.get("n") and part["diff"] is not None and low is not None and part["diff"] * 100 >= -GOAL_POINTS:
        # the measured difference is inside the bar: what misses is the interval's width at this n
        width = (part["diff"] - low) * 100
        line += (f"; at n = {part['n']} the interval's low end lies {width:.1f} points below the measured "
                 f"difference, so only a measured difference of about {width - GOAL_POINTS:+.1f} points or more "
                 "would meet it")
    return line + "."


def _picks(study: str, records: list[dict]) -> list[str]:
    by = {r["system"]: r for r in records}
    tied = [r for r in records if r["system"] == r["best_system"] or r["all_constraints_diff_vs_best_noise"]]
    cheapest = min(tied, key=lambda r: r["lm_calls_per_example"])
    lines = [f"* To pass the most constraints at the lowest cost: **{cheapest['system']}** "
             f"({_pct(cheapest['all_constraints'])} of examples pass every constraint, "
             f"{cheapest['lm_calls_per_example']:.2f} LM calls per example)"
             + (f"; {', '.join(r['system'] for r in tied if r is not cheapest)} "
                "pass about as many (no difference told apart from noise by this package's paired test) "
                "at more calls." if len(tied) > 1 else ".")]
    # a system that raised ended those examples early: its few calls are no economy to recommend
    assertion = [r for r in records if r["system"] in ASSERTION_SYSTEMS]
    sound = [r for r in assertion if not r["errors"]]
    if sound:
        cheap = min(sound, key=lambda r: r["lm_calls_per_example"])
        raised = [r for r in assertion if r["errors"] and r["lm_calls_per_example"] < cheap["lm_calls_per_example"]]
        lines.append(f"* If LM calls are what matters and the constraints must still be checked: "
                     f"**{cheap['system']}** ({cheap['lm_calls_per_example']:.2f} LM calls per example; "
                     f"{_pct(cheap['all_constraints'])} of examples pass every constraint)"
                     + "".join(f"; {r['system']} makes fewer ({r['lm_calls_per_example']:.2f}) but raised on "
                               f"{r['errors']} of {r['n']} examples" for r in raised) + ".")
    none = by.get(NONE)
    if none is not None:
        better = [r for r in records if r["system"] != NONE and r.get("quality_diff_vs_no_assertions")
                  and not r["quality_diff_vs_no_assertions_noise"] and r["quality_diff_vs_no_assertions"] > 0]
        if better:
            top = max(better, key=lambda r: r["quality"])
            lines.append(f"* If the task's quality is what matters: **{top['system']}** ({_pct(top['quality'])} "
                         f"against {_pct(none['quality'])} without assertions).")
        else:
            lines.append(f"* If only the task's quality matters: **no assertions** ({_pct(none['quality'])} at "
                         f"{none['lm_calls_per_example']:.2f} LM calls per example): no assertion system raised it by "
                         "a difference told apart from noise.")
    return lines


def results_markdown(report: dict[str, Any]) -> str:
    """The peers section of RESULTS.md (between its markers): the method, then per study the table, the
    comparisons, the goal and what to pick."""
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines = [
        BEGIN,
        "## Peer benchmark: lmassert_magic against dspy.Refine, dspy.BestOfN and DSPy 2.5.43 assertions",
        "",
        f"Generated by `python bench/peers.py` from `bench/peers.json` (seed {report['seed']}"
        + (f"; {versions}" if versions else "") + (f"; model {report['model']}" if report.get("model") else "")
        + "). Every sentence below is printed from the numbers.",
        "",
        "How it is run: every system runs the same program on the same examples (train and dev of the study: "
        "no system is compiled) with the same constraints. Every system asks the model the same way: the "
        "package's request format and a strict `json_schema` response format (grammar-constrained JSON), DSPy "
        "2.5.43 included; every LM-judged check, in a system's loop and in scoring, is `lmassert_magic.lm_judge`. "
        "LM calls are the calls that reached the model, judge calls included (and also shown apart); calls the "
        "cache answered are cache hits, shown apart; each system starts from a cold cache. Constraint verdicts and "
        "quality are measured afterwards on each system's final outputs, outside its counts. \"All constraints\" "
        "is the share of examples whose final output passes every constraint. Intervals are 95% (Wilson for "
        "rates; for differences to this package, an interval that excludes 0 only when the exact McNemar test "
        "does (the envelope of Newcombe's paired interval and the exact conditional one); differences are called ties "
        "when not told apart from noise).",
    ]
    if not report["studies"]:
        lines += ["", "No study of this benchmark has been run yet."]
    else:
        lines += ["", "![LM calls per example against constraints passed and quality](peers.png)"]
    for study in report["studies"]:
        records = [r for r in report["records"] if r["study"] == study]
        n = max(r["n"] for r in records)
        lines += ["", f"### {study} (n = {n})", "", *_table(study, records), "",
                  f"Quality: {QUALITY[study]}.", "", "#### What the numbers say", "", *_comparisons(study, records)]
        goal = _goal_lines(report["goal"].get(study) or {})
        if goal:
            lines += ["", "#### Goal (issue #16)", "", *goal]
        lines += ["", "#### What to pick", "", *_picks(study, records)]
    for study, counts in (report.get("in_progress") or {}).items():
        lines += ["", f"### {study}: run in progress", "",
                  "Examples scored so far: " + "; ".join(f"{system}: {k}" for system, k in counts.items())
                  + ". Its table is printed once every system has run on the same examples; `python bench/peers.py` "
                  "resumes the run from the checkpoint."]
    return "\n".join([*lines, "", END])


def replace_section(text: str, section: str) -> str:
    """RESULTS.md with its peers section replaced; other benches' marked sections are kept as they are.

    A file without peers markers holds an older, hand-written peers report: only the marked sections of
    other benches survive from it.
    """
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    others = [m.group(0) for m in re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", text, flags=re.DOTALL)]
    return "\n\n".join([TITLE + "\n\n" + section, *others]) + "\n"


# ---------------------------------------------------------------- chart


def write_chart(report: dict[str, Any], path: Any) -> bool:
    """Per study: share passing all constraints and quality (95% CI) against LM calls per example."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    studies = report["studies"]
    if not studies:
        return False
    fig, axes = plt.subplots(2, max(1, len(studies)), figsize=(6.5 * max(1, len(studies)), 8), squeeze=False)
    for col, study in enumerate(studies):
        records = [r for r in report["records"] if r["study"] == study]
        for row, (key, label) in enumerate((("all_constraints", "examples passing all constraints (%)"),
                                            ("quality", "quality (%)"))):
            ax = axes[row][col]
            for i, r in enumerate(records):
                x, y = r["lm_calls_per_example"], (r[key] or 0) * 100
                low, high = ((v or 0) * 100 for v in r[f"{key}_ci"])
                ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4,
                            color="#c44e52" if r["system"] == OURS else "#4c72b0")
                ax.annotate(r["system"].split(" (")[0], (x, y), textcoords="offset points", fontsize=8,
                            xytext=(6, 4 if i % 2 == 0 else -12))  # alternate: neighbours' labels do not overlap
            ax.set_xlabel("LM calls per example (judge calls included)")
            ax.set_ylabel(label)
            ax.set_ylim(-5, 105)
            ax.set_title(f"{study} (n = {max(r['n'] for r in records)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
