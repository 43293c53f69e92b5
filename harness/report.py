"""The benchmark report: a Markdown file and its figures, regenerated from stored runs.

``write_report`` reads only the run directories (via :mod:`harness.results`), so
running it again after more runs finish, or on another machine, gives the report
of exactly what is on disk.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

from harness.errors import ConfigError
from harness.frontier import hierarchical_paired_bootstrap
from harness.plots import pareto_plot, usage_heatmap
from harness.results import (
    PAIRED_RULES,
    benchmark_definition,
    episodes,
    family_summaries,
    finished_splits,
    headline_points,
    headline_single,
    is_learned,
    load_points,
    oracle_choices,
    paired_variation_groups,
    provenance,
    reference_point,
    replicate_dirs,
    rule_key,
    seed_rows,
    selected_points,
    split_sort_key,
    split_weights_of,
    task_of,
)
from harness.seeding import derive_seed

HEADLINE_SPLITS = (("test_id", "test_id"), ("test_powered", "test_powered"), ("test_ood", "OOD"))
MISSING = "—"
UNREACHED = "not reached"  # a family whose points never score as high as the best single model


def _file_name(text: str) -> str:
    # A ':' in a relative link reads as a URL scheme to Markdown renderers.
    return re.sub(r"[^\w.-]", "_", text)


def _num(value: float | None, digits: int) -> str:
    return (
        MISSING
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _dollars(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:#.3g}".rstrip(".")  # three significant digits, trailing zeros kept: 1.30, 0.0250


def _with_ci(value: float, lo: float, hi: float, fmt) -> str:
    if math.isnan(value):
        return MISSING
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def _plays(n: int) -> str:
    return "one play" if n == 1 else f"{n} plays"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, without the columns that are empty (:data:`MISSING`) in every row."""
    keep = [i for i in range(len(header)) if not rows or any(row[i] != MISSING for row in rows)]
    header, rows = [header[i] for i in keep], [[row[i] for i in keep] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _row_order(rows: pd.DataFrame) -> list[str]:
    """Single models cheapest first, then other fixed routers, then learned families by lambda."""
    first = rows.sort_values("split", key=lambda s: s.map(split_sort_key)).drop_duplicates("point")
    rank = first.assign(
        group=first["family"].map(lambda f: 0 if f == "single" else 1).where(~is_learned(first), 2),
        cost=first["mean_cost"].fillna(math.inf),
    )
    return list(rank.sort_values(["group", "family", "lam", "cost", "point"])["point"])


def played_headline_splits(points: pd.DataFrame) -> list[tuple[str, str]]:
    """The headline splits (and their titles) on which some router finished an episode: a table never
    carries a split's columns empty in every row."""
    return [
        (split, title)
        for split, title in HEADLINE_SPLITS
        if not points[(points["split"] == split) & (points["n"] > 0)].empty
    ]


def comparison_section(
    points: pd.DataFrame, shown: pd.DataFrame, single: str | None, score_digits: int
) -> list[str]:
    """The paper's table: score and $ with intervals on both test splits, deltas vs the best single model."""
    base = points[(points["point"] == single) & (points["split"] == "test_id")]
    best = base.iloc[0] if not base.empty else None
    splits = played_headline_splits(points)
    header = ["router"]
    for _, title in splits:
        header += [f"{title} score [95% CI]", f"{title} $/episode [95% CI]"]
    header += ["Δscore vs best single", "Δcost% vs best single"]
    body = []
    for point in _row_order(shown):
        cells = [f"**{point}** (best single)" if point == single else point]
        for split, _ in splits:
            match = shown[(shown["point"] == point) & (shown["split"] == split)]
            if match.empty:
                cells += [MISSING, MISSING]
                continue
            r = match.iloc[0]
            cells.append(_with_ci(r.mean_score, r.score_lo, r.score_hi, lambda x: _num(x, score_digits)))
            cells.append(_with_ci(r.mean_cost, r.cost_lo, r.cost_hi, _dollars))
        mine = shown[(shown["point"] == point) & (shown["split"] == "test_id")]
        if best is None or mine.empty or mine.iloc[0].n == 0:
            cells += [MISSING, MISSING]
        else:
            r = mine.iloc[0]
            cells.append(f"{r.mean_score - best.mean_score:+.{score_digits}f}")
            cells.append(
                f"{100 * (r.mean_cost - best.mean_cost) / best.mean_cost:+.1f}%"
                if best.mean_cost > 0
                else MISSING
            )
        body.append(cells)
    return _table(header, body)


def _interval(low: float, high: float, digits: int) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def headline_comparisons(
    bench_dir: Path,
    points: pd.DataFrame,
    definition: dict,
    single: str,
    split: str,
    margin: float,
    n_boot: int = 2000,
) -> list[dict]:
    """Each router chosen without looking at ``split`` against the best single model on its episodes.

    The routers are the fixed ones (nothing to choose) and each learned family at the λ chosen on val
    (benchmark.json ``selected``); a family without one is left out, since picking one of its λ on this
    split would be selecting on test. A family with a verdict row on the split is that row; the others
    get the verdict's own test (:func:`harness.verdict.verdict`, stratified where the split is).
    """
    from harness.verdict import verdict, verdict_rows

    anchor = points[(points["point"] == single) & (points["split"] == split)]
    if anchor.empty:
        return []
    reference = anchor.iloc[0].run_dir
    # The verdict's own rows (its resamples and seed), so the opening and the Verdict section agree.
    verdicts = {r["family"]: r for r in verdict_rows(bench_dir, margin) if r["split"] == split}
    selected = definition.get("selected") or {}
    rows = points[(points["split"] == split) & (points["n"] > 0) & (points["family"] != "single")]
    out = []
    for row in rows.itertuples():
        learned = not math.isnan(row.lam)
        if learned:
            lam = (selected.get(row.family) or {}).get("lam")
            if lam is None or not math.isclose(row.lam, float(lam), rel_tol=1e-9, abs_tol=1e-12):
                continue
        if learned and row.family in verdicts:
            test = verdicts[row.family]
        else:
            groups = paired_variation_groups(row.run_dir, reference)
            if not groups:
                continue
            weights = split_weights_of(row.run_dir, split)
            test = verdict(
                [list(groups.values())],
                margin,
                n_boot=n_boot,
                seed=derive_seed("summary", row.point, split) % 2**32,
                strata=[[task_of(v) for v in groups]] if weights is not None else None,
                weights=weights,
            )
        out.append({"point": row.point, "learned": learned, **test})
    return out


def summary_sentences(
    bench_dir: Path,
    points: pd.DataFrame,
    definition: dict,
    single: str | None,
    single_split: str,
    score_digits: int,
    n_boot: int = 2000,
) -> list[str]:
    """Who won, in two or three sentences computed from the runs, on the first headline split played.

    The best single model (chosen on val where a selection ran); whether a router beats it (its paired
    95% interval of the score difference above zero); the cheapest router that matches it (non-inferior
    at the verdict's margin) and the best at half its cost or less. Only routers chosen without the
    test split take part (:func:`headline_comparisons`), so the headline is never a test-selected point.
    """
    from harness.verdict import verdict_margin

    played = [s for s, _ in played_headline_splits(points)]
    if not played:
        return ["No test split has finished episodes yet."]
    split = played[0]
    base = points[(points["point"] == single) & (points["split"] == split) & (points["n"] > 0)]
    if single is None or base.empty:
        return [f"No single model finished episodes on {split}, so there is nothing to compare routers with."]
    best = base.iloc[0]
    fmt = lambda x: _num(x, score_digits)  # noqa: E731
    chosen = "the val-best single model" if single_split != split else "the best single model"
    sentences = [
        f"On {split} {chosen} is `{single}`: score {fmt(best.mean_score)}"
        f" [{fmt(best.score_lo)}, {fmt(best.score_hi)}] at ${_dollars(best.mean_cost)} per episode."
    ]
    margin = verdict_margin(definition)
    selected = definition.get("selected") or {}
    left_out = sorted(
        set(points.loc[is_learned(points) & (points["split"] == split), "family"]) - set(selected)
    )
    if left_out:
        names = ", ".join(f"`{f}`" for f in left_out)
        note = f"Left out: {names}, with no λ chosen on val (choosing one on {split} would flatter it)."
    rows = headline_comparisons(bench_dir, points, definition, single, split, margin, n_boot)
    if not rows:
        sentences.append(f"No router chosen without {split} shares episodes with it there.")
        return sentences + ([note] if left_out else [])

    def said(r: dict) -> str:
        low, high = r["score_diff_ci"]
        where = " at its val-selected λ" if r["learned"] else ""
        return (
            f"`{r['point']}`{where}: Δscore {r['score_diff']:+.{score_digits}f}"
            f" {_interval(low, high, score_digits)} at {100 * r['cost_ratio']:.0f}% of its cost"
        )

    better = sorted((r for r in rows if r["better"]), key=lambda r: -r["score_diff"])
    matched = min((r for r in rows if r["non_inferior"]), key=lambda r: r["cost_ratio"], default=None)
    half = max((r for r in rows if r["cost_ratio"] <= 0.5), key=lambda r: r["score_diff"], default=None)
    said_half = False
    if better:
        verb = "beats" if len(better) == 1 else "beat"
        sentences.append(f"{' and '.join(map(said, better))} {verb} it (95% paired interval above zero).")
    else:
        closest = max(rows, key=lambda r: r["score_diff"])
        text = "No router is shown better than it (no 95% paired interval above zero)"
        if closest is not matched:  # the cheapest match is said below, with its interval
            said_half = closest is half
            also = ", also the best at half its cost or less" if said_half else ""
            text += f"; the closest is {said(closest)}{also}"
        sentences.append(text + ".")
    said_matched = matched is not None and matched not in better
    if said_matched:
        also = ", also the best at half its cost or less" if half is matched else ""
        sentences.append(
            f"The cheapest that matches it (non-inferior at margin {margin:g}) is {said(matched)}{also}."
        )
    if half is None:
        sentences.append("No router costs half as much or less.")
    elif not (said_matched and half is matched) and not said_half:
        verdict = "non-inferior" if half["non_inferior"] else f"not shown non-inferior at margin {margin:g}"
        sentences.append(f"At half its cost or less the best is {said(half)}, {verdict}.")
    if left_out:
        sentences.append(note)
    return sentences


def frontier_section(
    points: pd.DataFrame, definition: dict, split: str, single: str | None, score_digits: int
) -> list[str]:
    ref_score, ref_cost, given = reference_point(definition, points, split)
    where = "from benchmark.json" if given else "derived: the split's worst score and highest cost"
    lines = [
        f"Reference point for hypervolume: score {_num(ref_score, score_digits)}, ${_dollars(ref_cost)} ({where})."
    ]
    summary = family_summaries(points, split, (ref_score, ref_cost), single)
    if summary.empty:
        return lines + ["", "No single-model run on this split to compare against."]
    # AIQ over a shared range compares families swept over two points or more; with fewer than two such
    # families it compares nothing, and the column goes.
    compared = summary["aiq_shared"].notna().sum() >= 2
    shared = next((r for r in summary["aiq_shared_range"] if r is not None), None)
    if shared is not None and compared:
        lines.append(f"Shared AIQ range: ${_dollars(shared[0])} to ${_dollars(shared[1])} per episode.")
    header = [
        "family",
        "points",
        "hypervolume",
        "AIQ (own range)",
        "AIQ (shared range)",
        "$ to match best single's score",
        "cost ratio vs best single",
        "score at best single's $",
        "Δscore at best single's $",
        "Pareto front",
    ]
    body = [
        [
            r.family,
            str(r.points),
            f"{r.hypervolume:.4g}",
            _num(r.aiq, score_digits),
            _num(r.aiq_shared, score_digits) if compared else MISSING,
            UNREACHED if pd.isna(r.cost_at_best_single_score) else _dollars(r.cost_at_best_single_score),
            UNREACHED if pd.isna(r.cost_at_best_single_score) else _num(r.cost_ratio_vs_best_single, 2),
            _num(r.score_at_best_single_cost, score_digits),
            MISSING
            if pd.isna(r.score_gain_vs_best_single)
            else f"{r.score_gain_vs_best_single:+.{score_digits}f}",
            r.front,
        ]
        for r in summary.itertuples()
    ]
    return [*lines, "", *_table(header, body)]


def _timed(shown: pd.DataFrame) -> bool:
    """Whether any row has a measured time per turn (imported runs, replay estimates and simulated
    backends carry none)."""
    return "seconds_per_turn" in shown and bool(shown["seconds_per_turn"].notna().any())


def switching_section(shown: pd.DataFrame) -> list[str]:
    """Switch rate, steps, wall seconds per turn (routing, model call, engine step) and episode counts."""
    splits = played_headline_splits(shown)
    timed = _timed(shown)
    header = ["router"]
    for _, title in splits:
        header += [f"{title} switch rate", f"{title} steps"]
        header += [f"{title} s/turn"] if timed else []
        header += [f"{title} episodes (failed)"]
    body = []
    for point in _row_order(shown):
        cells = [point]
        for split, _ in splits:
            match = shown[(shown["point"] == point) & (shown["split"] == split)]
            if match.empty:
                cells += [MISSING] * (4 if timed else 3)
                continue
            r = match.iloc[0]
            cells += [_num(r.switch_rate, 2), _num(r.mean_turns, 1)]
            cells += [_num(r.seconds_per_turn, 2)] if timed else []
            cells.append(f"{r.n} ({r.failed})")
        body.append(cells)
    return _table(header, body)


def benchmark_section(
    bench_dir: Path, definition: dict, shown: pd.DataFrame, single: str | None
) -> list[str]:
    """The benchmark plug-in's own table (HLE: the paper's accuracy/calibration layout), if it has one."""
    from harness.benchmarks import get_benchmark

    name = definition.get("benchmark") or (definition.get("definition") or {}).get("benchmark")
    if not name:
        return []
    return get_benchmark(name).report_section(
        episodes(bench_dir), list(dict.fromkeys(shown["point"])), single
    )


def _refused_plans(bench_dir: Path, definition: dict) -> list[str]:
    """Each replicate's recorded power plan of each judged family, where ``power: refuse`` stopped the
    benchmark on one of them before its test; empty otherwise."""
    from harness.verdict import is_judged, power_text

    verdict = (definition.get("definition") or {}).get("verdict") or {}
    if verdict.get("power") != "refuse":
        return []
    lines, refused = [], False
    for seed, path in sorted((replicate_dirs(bench_dir, definition) or {0: Path(bench_dir)}).items()):
        child = benchmark_definition(path)
        for family, per in sorted((child.get("power") or {}).items()):
            if not is_judged(verdict.get("judged"), family):
                continue
            choice = (child.get("selected") or {}).get(family) or {}
            for split, plan in per.items():
                refused = refused or not plan["powered"]
                lines.append(
                    f"- seed {seed}, {family} at λ {choice.get('lam', '?')} against"
                    f" `{choice.get('best_single', '?')}` on {split}: {power_text(plan)}"
                )
    return lines if refused else []


def verdict_section(bench_dir: Path, definition: dict, score_digits: int) -> list[str]:
    """The headline: each learned family's val-selected point against the val-best single model."""
    from harness.verdict import verdict_margin, verdict_rows

    margin = verdict_margin(definition)
    rows = verdict_rows(bench_dir, margin)
    # A seeded benchmark's own manifest holds the definition; its replicates' hold what they selected.
    selection = definition.get("selection") or (definition.get("definition") or {}).get("select") or {}
    if not rows:
        planned = _refused_plans(bench_dir, definition)
        if planned:
            return [
                "No verdict: the power plan, made from val before any test episode, said it could not be decided,"
                " and `verdict.power: refuse` stopped the benchmark before its test. The judged families' plans:",
                "",
                *planned,
            ]
        return [
            "No verdict: it needs a selection stage (the val-best single model and each family's"
            " val-selected λ) and both evaluated on a test split."
        ]
    rule = selection.get("rule", "?")
    stated = f" (margin {selection['margin']:g})" if selection.get("margin") is not None else ""
    repeats = selection.get("repeats", 1)
    plain = definition.get("definition") or {}
    per_split = plain.get("eval_split_repeats") or {}
    on_test = _plays(plain.get("eval_repeats", 1)) + "".join(
        f" ({_plays(n)} on {split})" for split, n in sorted(per_split.items())
    )
    lines = [
        f"Each learned family at the λ its rule `{rule}`{stated} chose on {selection.get('split', 'val')}"
        f" ({_plays(repeats)} of each variation), against the single model with the best val score;"
        f" on test, {on_test} of each variation, both routers on the same episodes."
        " Δscore is paired by episode; its 95% interval resamples training seeds, then variations, then"
        " repeats (hierarchical bootstrap). The cost ratio is the router's mean $/episode over the single"
        f" model's, with its interval from the same resamples. Non-inferior at margin {margin:g}: the"
        f" interval's lower bound is above −{margin:g} points; better: above 0.",
        "",
    ]
    lines += _verdict_table(rows, score_digits)
    for also in selection.get("also") or []:
        key = rule_key(also["rule"], also.get("margin"))
        lines += [
            "",
            f"Beside it, rule `{also['rule']}`"
            + (f" (margin {also['margin']:g})" if also.get("margin") is not None else "")
            + " (stated in the same definition), choosing from the same val runs; its points were played on the same"
            + (f" {', '.join(also['splits'])} episodes:" if also.get("splits") else " test episodes:"),
            "",
            *_verdict_table(
                verdict_rows(bench_dir, margin, rule=key, splits=also.get("splits")), score_digits
            ),
        ]
    return lines


def _verdict_table(rows: list[dict], score_digits: int) -> list[str]:
    from harness.verdict import verdict_text

    header = ["family", "split", "λ (per seed)", "best single (val)", "score vs single"]
    header += ["Δscore [95% CI]", "cost ratio [95% CI]", "verdict", "seeds × variations (episodes)"]
    body = []
    for r in rows:
        d = r["score_diff_ci"]
        c = r["cost_ratio_ci"]
        singles = ", ".join(dict.fromkeys(r["best_single"]))
        body.append(
            [
                r["family"],
                dict(HEADLINE_SPLITS).get(r["split"], r["split"]),
                ", ".join(f"{x:g}" for x in r["lam"]),
                f"`{singles}`",
                f"{_num(r['score'], score_digits)} vs {_num(r['best_single_score'], score_digits)}",
                f"{r['score_diff']:+.{score_digits}f} [{d[0]:+.{score_digits}f}, {d[1]:+.{score_digits}f}]",
                f"{_num(r['cost_ratio'], 2)} [{_num(c[0], 2)}, {_num(c[1], 2)}]",
                f"**{verdict_text(r)}**",
                f"{r['n_seeds']} × {r['n_variations'] // max(1, r['n_seeds'])} ({r['n_episodes']})",
            ]
        )
    return _table(header, body)


def _bench_name(bench_dir: Path, definition: dict) -> str:
    return str(definition.get("name") or Path(bench_dir).resolve().name)


def companion_section(companions: list[tuple[Path, dict]]) -> list[str]:
    """The verdicts of other benchmarks (another pool, another split) beside this one's, so one report
    says whether the headline verdict is a property of the method or of one setting."""
    lines = []
    for bench_dir, definition in companions:
        name = _bench_name(bench_dir, definition)
        description = (definition.get("definition") or {}).get("description")
        lines += [f"### {name}", ""]
        if description:
            lines += [f"{description} Its own report: `{_file_name(name)}.md`.", ""]
        lines += [*verdict_section(bench_dir, definition, 1), ""]
    return lines


def _stage_a_design(definition: dict) -> str:
    """A Stage A collection in words: its router, how many collection seeds, and its branch design."""
    collect = (definition.get("definition") or {}).get("collect") or {}
    router = collect.get("router") or {}
    params = ", ".join(f"{k}={v}" for k, v in (router.get("params") or {}).items())
    text = f"`{router.get('name', '?')}`" + (f" ({params})" if params else "")
    text += f" on {collect.get('split', '?')}, {len(collect.get('seeds') or [])} collection seed(s)"
    branch = collect.get("branch")
    if branch:
        continuation = (branch.get("continuation") or {}).get("name", "?")
        text += (
            f"; branched: {branch.get('episodes') or 'all'} parents x {branch.get('states_per_episode', 1)} state(s)"
            f" x {branch.get('models') or 'all'} models, `{continuation}` continuation, prefix {branch.get('prefix')}"
        )
    return text


def exploration_section(benches: list[tuple[Path, dict]]) -> list[str]:
    """What each benchmark's Stage A spent, per seed replicate, so collections compare at equal budget
    (:mod:`harness.exploration`; every replicate collects its own data)."""
    header = [
        "benchmark",
        "seed",
        "Stage A",
        "episodes",
        "model calls",
        "tokens (M)",
        "dollars",
        "engine steps",
    ]
    body = []
    for bench_dir, definition in benches:
        name = _bench_name(bench_dir, definition)
        replicates = replicate_dirs(bench_dir, definition) or {0: Path(bench_dir)}
        for seed, path in sorted(replicates.items()):
            spend = benchmark_definition(path).get("exploration_spend")
            if not spend:
                continue
            body.append(
                [
                    name,
                    str(seed),
                    _stage_a_design(benchmark_definition(path)),
                    f"{spend['episodes']:,}",
                    f"{spend['model_calls']:,}",
                    f"{spend['tokens'] / 1e6:.1f}",
                    _dollars(spend["dollars"]),
                    f"{spend['engine_steps']:,}",
                ]
            )
    if not body:
        return []
    return [
        "## Stage A: exploration spend",
        "",
        "What each seed replicate's exploration cost to collect: every model call made (a branch's prefix"
        " restored from the log made none), its tokens and dollars, and the engine steps a plain engine had to"
        " run (restoring a branch's prefix included).",
        "",
        *_table(header, body),
        "",
    ]


def write_report(
    bench_dir: Path, reports_dir: Path, n_boot: int = 2000, companions: list[Path] | None = None
) -> Path:
    """Write ``reports_dir/<bench>.md`` and its figures in ``reports_dir/<bench>/``; returns the Markdown path.

    ``companions``: results directories of other benchmarks whose verdicts follow this one's."""
    bench_dir = Path(bench_dir)
    definition = benchmark_definition(bench_dir)
    loaded = [(Path(c), benchmark_definition(Path(c))) for c in companions or []]
    for companion, companion_definition in loaded:  # checked before any report is written
        if not companion_definition:
            raise ConfigError(f"companion {companion} holds no benchmark results (no benchmark definition)")
    if definition.get("replicates"):
        return write_seed_report(bench_dir, reports_dir, definition, n_boot, loaded)
    name = _bench_name(bench_dir, definition)
    lines = _single_seed_lines(bench_dir, reports_dir, definition, name, n_boot, loaded)
    return _write(lines, reports_dir, name)


def _single_seed_lines(
    bench_dir: Path,
    reports_dir: Path,
    definition: dict,
    name: str,
    n_boot: int,
    companions: list[tuple[Path, dict]] | None = None,
) -> list[str]:
    figures = Path(reports_dir) / _file_name(name)
    figures.mkdir(parents=True, exist_ok=True)
    points = load_points(bench_dir, n_boot=n_boot)
    single, single_split = headline_single(points, definition)
    shown = selected_points(points, definition)
    finite = points["mean_score"].dropna().abs()
    score_digits = 3 if not finite.empty and finite.max() <= 1.5 else 1
    origin = provenance(bench_dir)

    lines = [f"# {name}: routing benchmark report", ""]
    description = (definition.get("definition") or {}).get("description")
    if description:  # what was played, in the definition's own words (real models, a stand-in bank, ...)
        lines += [f"*{description}*", ""]
    lines += [
        " ".join(
            summary_sentences(bench_dir, points, definition, single, single_split, score_digits, n_boot)
        ),
        "",
    ]
    lines.append(
        f"Regenerate with `harness report {bench_dir}`; every number comes from the run directories in `runs/`."
    )
    lines.append("")
    for key, title in (
        ("pool", "Pool"),
        ("pool_sha256", "Pool file sha256"),
        ("split_version", "Split version"),
        ("engine", "Engine"),
    ):
        values = origin[key]
        lines.append(f"- {title}: {', '.join(f'`{v}`' for v in values) if values else MISSING}")
    lines.append(f"- Seeds: {definition.get('seeds', origin['seed'])}")
    lines += ["", "## Verdict", "", *verdict_section(bench_dir, definition, score_digits), ""]
    lines += companion_section(companions or [])
    lines += ["## Comparison with single models", ""]
    notes = [
        "Means per episode over finished episodes; intervals are 95% paired bootstrap intervals over episodes"
        " (over variations, each with all of its repeats, where variations were played more than once)."
    ]
    if single is None:
        notes.append("No single-model run on test_id, so the delta columns are empty.")
    else:
        notes.append(
            f"Best single model: `{single}`, the single-model router with the highest {single_split} score;"
            " deltas are on test_id."
        )
    selection = definition.get("selection")
    if is_learned(points).any():
        if selection and definition.get("selected"):
            picks = ", ".join(
                f"{family} λ={choice.get('lam'):g}" for family, choice in definition["selected"].items()
            )
            margin = selection.get("margin")
            stated = "" if margin is None else f" with margin {margin:g}"
            notes.append(
                f"Learned routers are shown at the λ the rule `{selection['rule']}`{stated} selected on"
                f" {selection['split']} ({_plays(selection.get('repeats', 1))} of each variation) from the"
                f" definition's fixed grid ({picks}); no test split was used to choose it."
            )
        elif definition.get("selected"):
            picks = ", ".join(
                f"{family} λ={choice.get('lam')}" for family, choice in definition["selected"].items()
            )
            notes.append(f"Learned routers are shown at the λ Optuna selected on val ({picks}).")
        else:
            notes.append("No tuned λ recorded in benchmark.json, so every λ of each sweep is a row.")
    lines += [" ".join(notes), "", *comparison_section(points, shown, single, score_digits), ""]
    extra = benchmark_section(bench_dir, definition, shown, single)
    if extra:
        lines += extra
    if selection and definition.get("selected"):
        lines += ["## Selection on " + str(selection["split"]), ""]
        lines += [*selection_section(points, definition, score_digits), ""]

    lines += ["## Score-cost frontier", ""]
    for split in finished_splits(points):
        plot = pareto_plot(
            points,
            split,
            figures / f"pareto_{_file_name(split)}.png",
            title=f"{name}: score vs cost, {split}",
        )
        lines += [f"### {split}", "", *frontier_section(points, definition, split, single, score_digits), ""]
        lines += [f"![Score vs cost on {split}]({figures.name}/{plot.name})", ""]

    headline = headline_points(points, definition)
    if not headline.empty:
        lines += ["## Model usage by task type", ""]
        lines.append("Share of each router's test_id dollars spent on each model, per task type.")
        lines.append("")
        for row in headline.itertuples():
            plot = usage_heatmap(bench_dir, row.point, figures / f"usage_{_file_name(row.point)}.png")
            lines += [f"![Model usage of {row.point}]({figures.name}/{plot.name})", ""]

    lines += ["## Switching and time", ""]
    timed = " s/turn: wall seconds per turn (routing, model call, engine step or tool calls), as measured on"
    lines.append(
        "Switch rate: share of consecutive turns answered by different models."
        + (f"{timed} the machine that played it." if _timed(shown) else "")
    )
    lines.append("")
    lines += [*switching_section(shown), ""]
    return lines


def _write(lines: list[str], reports_dir: Path, name: str) -> Path:
    figures = Path(reports_dir) / _file_name(name)
    path = Path(reports_dir) / f"{_file_name(name)}.md"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    text = "\n".join(lines)
    tmp.write_text(text)
    os.replace(tmp, path)
    # Figures of an earlier report (a lambda Optuna no longer selects) would otherwise linger beside it.
    for figure in figures.glob("*.png") if figures.is_dir() else ():
        if f"({figures.name}/{figure.name})" not in text:
            figure.unlink()
    return path


def selection_section(points: pd.DataFrame, definition: dict, score_digits: int) -> list[str]:
    """The val-selected point of each family, what it scores on test, and the test-selected oracle beside it."""
    selection = definition["selection"]
    oracle = oracle_choices(points, definition)
    split = selection["split"]
    header = [
        "family",
        f"selected λ ({split})",
        f"{split} score",
        f"{split} $/episode",
        f"reaches best single on {split}",
        "test_id score at it",
        "oracle λ (selected on test_id)",
        "oracle test_id score",
    ]
    rule = selection["rule"]
    fallback = "the highest lower bound" if rule in PAIRED_RULES else "the highest score"
    body = []
    for family, choice in sorted(definition["selected"].items()):
        at = points[
            (points["family"] == family)
            & (points["split"] == "test_id")
            & points["lam"].map(lambda x, lam=choice["lam"]: math.isclose(x, lam, abs_tol=1e-9))
        ]
        o = oracle.get(family)
        reached = choice.get("reached_best_single")
        body.append(
            [
                family,
                f"{choice['lam']:g}",
                _num(choice.get("score"), score_digits),
                _dollars(choice.get("cost")),
                MISSING if reached is None else ("yes" if reached else f"no: {fallback} instead"),
                _num(at.iloc[0].mean_score, score_digits) if not at.empty else MISSING,
                f"{o['lam']:g} (oracle)" if o else MISSING,
                _num(o["score"], score_digits) if o else MISSING,
            ]
        )
    margin = selection.get("margin")
    margin_text = MISSING if margin is None else f"{margin:g}"
    what = {
        "cheapest_reaching_best_single": "the cheapest λ whose score reaches the best single model's",
        "cheapest_noninferior": f"the cheapest λ whose score is within {margin_text} points of the best single"
        " model's",
        "cheapest_bound_noninferior": "the cheapest λ whose paired difference to the best single model has"
        f" a 95% lower bound above −{margin_text}",
        "highest_val_score": "the λ with the highest score",
    }.get(rule, rule)
    oracle_note = (
        "it has no oracle column: the test points carry means, not the paired episodes its bound needs."
        if rule in PAIRED_RULES
        else "the oracle column applies the same rule to test_id and is optimistic by construction, shown"
        " only to size that optimism."
    )
    lines = [
        f"Rule `{rule}` on {split} ({what}; when none qualifies, {fallback}), stated in the definition"
        f" before evaluation; {oracle_note}"
    ]
    beside = [
        f"- `{key}` chose λ={c['lam']:g} for {family} ({split} score {_num(c['score'], score_digits)},"
        f" {_dollars(c['cost'])}/episode"
        + (f", paired bound {c['score_diff_low']:+.1f}" if "score_diff_low" in c else "")
        + ("" if c.get("reached_best_single") is not False else "; none qualified")
        + ")"
        for family, choice in sorted(definition["selected"].items())
        for key, c in sorted((choice.get("also") or {}).items())
    ]
    if beside:
        beside = ["", "The definition's further rules, from the same candidates:", "", *beside]
    return [*lines, "", *_table(header, body), *beside]


def seed_section(bench_dir: Path, score_digits: int = 1, n_boot: int = 4000) -> list[str]:
    """Across seed replicates: mean and spread of each router, and its paired difference to the best single."""
    rows = seed_rows(bench_dir)
    if rows.empty:
        return ["No seed replicate has finished test runs yet."]
    header = ["router", "split", "seeds", "λ per seed", "score: mean ± sd over seeds", "episode CI ± (mean)"]
    header += ["$/episode: mean ± sd", "Δscore vs best single [hierarchical 95% CI]", "P(Δ ≤ 0)", "Δcost%"]
    body = []
    order = {split: i for i, (split, _) in enumerate(HEADLINE_SPLITS)}
    grouped = rows.groupby(["router", "split"], sort=False)
    for (router, split), group in sorted(grouped, key=lambda kv: (order.get(kv[0][1], 9), kv[0][0])):
        kept = group[group["pairs"].map(len) > 0]
        weights = next((w for w in kept["weights"] if w is not None), None)
        test = (
            hierarchical_paired_bootstrap(
                list(kept["pairs"]),
                n_boot=n_boot,
                strata=list(kept["strata"]) if weights is not None else None,
                weights=weights,
            )
            if not kept.empty
            else None
        )
        sd = group["score"].std(ddof=1) if len(group) > 1 else math.nan
        cost_sd = group["cost"].std(ddof=1) if len(group) > 1 else math.nan
        lams = ", ".join(MISSING if math.isnan(x) else f"{x:g}" for x in group["lam"])
        dcost = 100 * ((group["cost"] - group["best_single_cost"]) / group["best_single_cost"]).mean()
        body.append(
            [
                router,
                split,
                str(len(group)),
                lams if group["lam"].notna().any() else MISSING,
                f"{_num(group['score'].mean(), score_digits)} ± {_num(sd, score_digits)}",
                _num(group["score_halfwidth"].mean(), score_digits),
                f"{_dollars(group['cost'].mean())} ± {_dollars(cost_sd)}",
                MISSING
                if test is None
                else f"{test.score_diff:+.{score_digits}f} [{test.score_diff_ci[0]:+.{score_digits}f},"
                f" {test.score_diff_ci[1]:+.{score_digits}f}]",
                MISSING if test is None else f"{test.p_le_zero:.3f}",
                f"{dcost:+.1f}%",
            ]
        )
    return _table(header, body)


def write_seed_report(
    bench_dir: Path,
    reports_dir: Path,
    definition: dict,
    n_boot: int = 2000,
    companions: list[tuple[Path, dict]] | None = None,
) -> Path:
    """A seeded benchmark: the across-seed headline, then each replicate's own report beside it."""
    name = _bench_name(bench_dir, definition)
    folder = Path(reports_dir) / _file_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    replicates = replicate_dirs(bench_dir, definition)
    links = []
    for seed, path in sorted(replicates.items()):
        child = benchmark_definition(path)
        child_name = str(child.get("name") or path.name)
        _write(_single_seed_lines(path, folder, child, child_name, n_boot), folder, child_name)
        links.append(f"[seed {seed}]({folder.name}/{_file_name(child_name)}.md)")
    lines = [f"# {name}: routing benchmark report over {len(replicates)} seeds", ""]
    lines.append(f"Regenerate with `harness report {bench_dir}`; each seed replicate repeats exploration,")
    lines.append(
        "training, selection on val and evaluation. Per-seed reports: " + (", ".join(links) or MISSING) + "."
    )
    lines += ["", "## Verdict", "", *verdict_section(bench_dir, definition, 1), ""]
    lines += companion_section(companions or [])
    lines += exploration_section([(Path(bench_dir), definition), *(companions or [])])
    lines += ["## Across seeds", ""]
    lines.append(
        "Learned routers at each seed's val-selected λ; the best single model is each seed's val-best."
        " Δscore is paired by episode within a seed; its interval resamples seeds, then variations, then"
        " repeats (hierarchical bootstrap), so it carries the training, the task and the evaluation variance."
        " The episode CI column is the mean half-width of the per-seed episode bootstrap, for comparison."
    )
    lines += ["", *seed_section(bench_dir), ""]
    return _write(lines, reports_dir, name)
