"""Strict config loading: bad input is a one-line error naming the thing, before any work."""

import functools
import inspect
import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from harness.batch import prepare
from harness.benchmarks import get_benchmark
from harness.cli import app
from harness.config import (
    BENCHMARKS_DIR,
    SCHEMA_DIR,
    BenchmarkDef,
    Limits,
    RouterSpec,
    RunConfig,
    from_dict,
    json_schemas,
    load_benchmark,
    recorded,
    resolve,
    run_config,
)
from harness.errors import ConfigError, HarnessError, UnknownNameError
from harness.pipeline import BenchmarkRun
from harness.pool import POOLS_DIR, load_pool
from harness.trajectory import RunStore
from routers import make_router


def test_run_config_from_yaml_data():
    config = from_dict(
        RunConfig,
        {"router": {"name": "single", "params": {"model": "gpt-5"}}, "limits": {"max_turns": 10}},
        "cfg",
    )
    assert config.router.label == "single:gpt-5" and config.limits == Limits(max_turns=10)
    # An unset limit takes the benchmark plug-in's: ScienceWorld's reference budget of $2.00.
    assert resolve(config).limits == Limits(max_turns=10, budget_dollars=2.0)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"router": {"name": "random"}, "sed": 1}, "unknown key 'sed'"),
        ({"router": {"name": "random"}, "workers": "two"}, "cfg.workers"),
        ({"router": {"name": "random"}, "limits": {"budget_dollars": -1}}, "budget_dollars must be positive"),
        ({"router": {"params": {}}}, r"cfg.router: missing required key 'name'"),
        (
            {"router": {"name": "random"}, "workers": "2"},
            r"cfg.workers: expected an integer \(int\), got '2'",
        ),
        ({"router": {"name": "random"}, "quick": 1}, "cfg.quick: expected true or false"),
        (
            {"router": {"name": "random"}, "limits": {"budget_dollars": float("nan")}},
            "budget_dollars.*finite",
        ),
        (
            {"router": {"name": "random"}, "executor": "slurm"},
            "cfg.executor: input should be 'local' or 'ray'",
        ),
    ],
)
def test_bad_run_config(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RunConfig, data, "cfg")


def test_pool_loads_with_prices_and_hash():
    pool = load_pool("paper6")
    assert pool.names[0] == "gpt-5" and len(pool.names) == 6
    assert pool.model("gpt-oss-120b").price.output_per_mtok == 0.36
    assert len(pool.sha256) == 64


def test_malformed_pool_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_pool(str(bad))
    bad.write_text(
        "name: x\nmodels:\n  - {name: a, price: {input_per_mtok: 1, output_per_mtok: 2, version: t}, simulated: {skill: {default: 1.5}}}\n"
    )
    with pytest.raises(ConfigError, match=r"skill\['default'\]"):
        load_pool(str(bad))
    with pytest.raises(UnknownNameError, match="unknown pool 'nope'"):
        load_pool("nope")


def test_unknown_router_and_model_names():
    names = load_pool("paper6").names
    with pytest.raises(UnknownNameError, match="unknown router 'oracle'"):
        make_router("oracle", {}, names)
    with pytest.raises(UnknownNameError, match="'gpt-6'"):
        make_router("single", {"model": "gpt-6"}, names)
    with pytest.raises(ConfigError, match="router 'random'"):
        make_router("random", {"temperature": 2}, names)


def test_benchmarks_load():
    quick = load_benchmark("quick")
    assert quick.quick and "test_ood" in quick.eval_splits
    assert RouterSpec("single", {"model": "gpt-5"}) in quick.fixed_routers
    with pytest.raises(UnknownNameError, match="unknown benchmark 'fast'"):
        load_benchmark("fast")


# -- strict YAML: duplicate keys and required fields -------------------------------------------------


def test_a_duplicate_key_in_a_pool_is_refused_naming_the_key_and_both_lines(tmp_path):
    pool = tmp_path / "dup.yaml"
    pool.write_text(
        "name: x\nmodels:\n  - name: a\n    price:\n      input_per_mtok: 1.0\n      output_per_mtok: 2.0\n"
        "      version: v\n      input_per_mtok: 3.0\n"
    )
    with pytest.raises(ConfigError, match=r"dup.yaml: duplicate key 'input_per_mtok' at lines 5 and 8$"):
        load_pool(str(pool))


def test_a_duplicate_key_in_a_definition_is_one_line_before_any_work(tmp_path):
    text = (BENCHMARKS_DIR / "quick.yaml").read_text()
    first = 1 + next(i for i, line in enumerate(text.splitlines()) if line.startswith("workers:"))
    path = tmp_path / "dup.yaml"
    path.write_text(text + "workers: 4\n")
    last = len(path.read_text().splitlines())
    with pytest.raises(ConfigError, match=rf"duplicate key 'workers' at lines {first} and {last}"):
        load_benchmark(str(path))
    results = tmp_path / "results"
    result = CliRunner().invoke(app, ["benchmark", str(path), "--results", str(results), "--no-track"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {path}: duplicate key 'workers' at lines {first} and {last}"
    ]
    assert not results.exists()


def test_a_price_without_a_version_is_refused_not_given_one(tmp_path):
    data = yaml.safe_load((POOLS_DIR / "paper6.yaml").read_text())
    del data["models"][1]["price"]["version"]
    path = tmp_path / "unversioned.yaml"
    path.write_text(yaml.safe_dump(data))
    name = data["models"][1]["name"]
    with pytest.raises(ConfigError, match=rf"models\['{name}'\].price: missing required key 'version'$"):
        load_pool(str(path))


def test_unknown_keys_are_named_with_what_is_allowed(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: t\nfixed_routers: [{name: random}]\ncollect: {seed: [0]}\n")
    with pytest.raises(
        ConfigError,
        match=r"typo.yaml.collect: unknown key 'seed' \(allowed: router, split, quick, seeds, branch\)",
    ):
        load_benchmark(str(path))


# -- one place for every default ---------------------------------------------------------------------


def test_a_definition_takes_the_run_config_defaults_for_what_they_share(tmp_path):
    definition = BenchmarkDef(name="d", fixed_routers=[RouterSpec("random")])
    run = BenchmarkRun(definition, tmp_path).config(RouterSpec("random"), "test_id", definition.quick)
    default = resolve(RunConfig())
    shared = ["pool", "benchmark", "split_file", "quick", "seed", "workers", "limits", "judge", "executor"]
    assert {k: getattr(run, k) for k in shared} == {k: getattr(default, k) for k in shared}
    # Stage A explores as every shipped definition does: sticky, not uniform per turn.
    assert definition.collect.router == RouterSpec("sticky-random")


def help_defaults(command: str) -> dict[str, str]:
    """Every default ``harness <command> --help`` shows, by option (or argument) name."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert result.exit_code == 0, result.output
    shown = {}
    for line in result.output.splitlines():
        found = re.search(r"^[│|*\s]*(--[\w-]+|\w+)\b.*\[default: \(?(.*?)\)?\]", line)
        if found:
            shown[found[1].removeprefix("--")] = found[2]
    return shown


class Captured(HarnessError):
    """Stops a command where it would start work, holding what it was about to use."""


def test_every_default_run_help_shows_is_the_one_used(tmp_path, monkeypatch):
    import harness.batch

    used = {}
    original = harness.batch.play_run

    @functools.wraps(original)  # the help reads the library's defaults from its signature
    def play_run(config, out, **kwargs):
        used.update(config=config, kwargs=kwargs)
        raise Captured("captured")

    monkeypatch.setattr(harness.batch, "play_run", play_run)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["run", "--out", str(out)]).exit_code == 2
    config, kwargs = used["config"], used["kwargs"]
    plugin = get_benchmark(config.benchmark)
    signature = inspect.signature(original).parameters
    flag = {True: "quick", False: "no-quick"}
    checks = {
        "router": (config.router.name, config.router.params) == (RunConfig().router.name, {}),
        "benchmark": config.benchmark,
        "pool": config.pool,
        "split": config.split,
        "split-file": "the benchmark's" if config.split_file is None else config.split_file,
        "quick": flag[config.quick],
        "workers": str(config.workers),
        "executor": config.executor,
        "seed": str(config.seed),
        "max-turns": "the benchmark's" if config.limits.max_turns == plugin.limits.max_turns else None,
        "budget": "the benchmark's" if config.limits.budget_dollars == plugin.limits.budget_dollars else None,
        "backend": config.backend,
        "wait": str(kwargs.get("wait_s", signature["wait_s"].default)),
        "keep-infra-failures": "no-keep-infra-failures"
        if kwargs.get("retry_infrastructure", signature["retry_infrastructure"].default)
        else "keep-infra-failures",
    }
    shown = help_defaults("run")
    assert set(shown) == set(checks)
    checks["router"] = config.router.name if checks["router"] else None
    assert shown == checks
    # What the batch records is that effective configuration, nothing filled in later.
    batch = prepare(config, out)
    batch.store.close()
    assert json.loads((out / "config.json").read_text())["run"] == recorded(config) == recorded(run_config())


def test_every_default_benchmark_help_shows_is_the_one_used(tmp_path, monkeypatch):
    import harness.pipeline

    used = {}

    @functools.wraps(harness.pipeline.run_benchmark)
    def run_benchmark(options, progress=None):
        used["options"] = options
        raise Captured("captured")

    monkeypatch.setattr(harness.pipeline, "run_benchmark", run_benchmark)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert CliRunner().invoke(app, ["benchmark"]).exit_code == 2
    options = used["options"]
    definition = load_benchmark(options.definition)
    bench = BenchmarkRun(
        definition, options.results, prefix_cache=options.prefix_cache, executor=options.executor
    )
    checks = {
        "name": options.definition,
        "results": str(options.results),
        "reports": str(options.reports),
        "track": "track" if options.track else "no-track",
        "prefix-cache": "the definition's"
        if bench.prefix_cache == (bench.layout.prefix_cache if definition.prefix_cache else None)
        else None,
        "executor": "the definition's" if bench.executor == definition.executor else None,
    }
    assert help_defaults("benchmark") == checks


def test_every_default_serve_help_shows_is_the_one_used(tmp_path, monkeypatch):
    import harness.serve

    used = {}

    def serve(config, announce=print):
        used["config"] = config
        raise Captured("captured")

    monkeypatch.setattr(harness.serve, "serve", serve)
    out = tmp_path / "served"
    assert CliRunner().invoke(app, ["serve", "--out", str(out), "--router", "random"]).exit_code == 2
    config = used["config"]
    limits = resolve(config.run_config()).limits  # as the server resolves them
    plugin = get_benchmark(config.benchmark)
    checks = {
        "pool": config.pool,
        "benchmark": config.benchmark,
        "seed": str(config.seed),
        "max-turns": "the benchmark's" if limits.max_turns == plugin.limits.max_turns else None,
        "budget": "the benchmark's" if limits.budget_dollars == plugin.limits.budget_dollars else None,
        "host": config.host,
        "port": str(config.port),
        "client-key-env": config.client_key_env,
        "idle-timeout": str(config.idle_timeout_s),
    }
    assert help_defaults("serve") == checks


# -- the published JSON Schemas ----------------------------------------------------------------------


def test_the_published_json_schemas_are_current_and_check_every_shipped_file():
    import jsonschema

    generated = json_schemas()
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(generated)
    for name, schema in generated.items():
        assert json.loads((SCHEMA_DIR / name).read_text()) == schema, f"{name} is stale: run `make schema`"
    kinds = {"benchmark": sorted(BENCHMARKS_DIR.glob("*.yaml")), "pool": sorted(POOLS_DIR.glob("*.yaml"))}
    for kind, files in kinds.items():
        validator = jsonschema.Draft202012Validator(generated[f"{kind}.schema.json"])
        for path in files:
            data = yaml.safe_load(path.read_text())
            if data is not None:
                assert not list(validator.iter_errors(data)), path
    bad = yaml.safe_load((BENCHMARKS_DIR / "quick.yaml").read_text()) | {"workers": "2", "sed": 1}
    validator = jsonschema.Draft202012Validator(generated["benchmark.schema.json"])
    assert {e.validator for e in validator.iter_errors(bad)} == {"type", "additionalProperties"}


def test_harness_episode_is_a_batch_of_one_played_like_harness_run(tmp_path):
    out = tmp_path / "one"
    argv = ["episode", "--task", "boil", "--variation", "3", "--router", "single", "-p", "model=gpt-oss-120b"]
    result = CliRunner().invoke(app, [*argv, "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = run_config(
        router="single", params={"model": "gpt-oss-120b"}, split="any", task_filter="^boil$", variation=3
    )
    assert json.loads((out / "config.json").read_text())["run"] == recorded(expected)
    (record,) = RunStore(out).episodes()
    assert (record.task, record.variation, record.split) == ("boil", 3, "any")
    lines = result.output.strip().splitlines()
    assert len(lines) == record.turns + 1 and lines[-1].startswith(f"status={record.status}")
    outside = CliRunner().invoke(app, [*argv[:4], "99", "--out", str(tmp_path / "none")])
    assert outside.exit_code == 2 and "variation 99" in outside.output
    assert not (tmp_path / "none").exists()


def test_options_overlay_the_config_file_which_overlays_the_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "router: {name: sticky-random, params: {switch_prob: 0.1}}\nsplit: val\nlimits: {max_turns: 7}\n"
    )
    config = run_config(path, split="train", params={"label": "x"}, budget_dollars=0.5)
    assert (config.split, config.pool) == ("train", RunConfig.pool)
    assert config.router == RouterSpec("sticky-random", {"switch_prob": 0.1, "label": "x"})
    assert config.limits == Limits(max_turns=7, budget_dollars=0.5)
    # Another router does not inherit parameters meant for the file's.
    assert run_config(path, router="random").router == RouterSpec("random")
    path.write_text("router: random\n")
    with pytest.raises(ConfigError, match=r"run.yaml.router: expected a mapping, got 'random'"):
        run_config(path, params={"label": "x"})


def test_a_broken_rule_deep_in_a_file_names_where_it_is(tmp_path):
    data = yaml.safe_load((POOLS_DIR / "paper6.yaml").read_text())
    data["models"][2]["simulated"]["skill"]["default"] = 1.5
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data))
    name = data["models"][2]["name"]
    with pytest.raises(
        ConfigError, match=rf"pool.yaml.models\['{name}'\].simulated: skill\['default'\] must be in"
    ):
        load_pool(str(path))
