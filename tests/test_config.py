"""Strict config loading: bad input is a one-line error naming the thing, before any work."""

import pytest

from harness.batch import resolve
from harness.config import Limits, RouterSpec, RunConfig, from_dict
from harness.errors import ConfigError, UnknownNameError
from harness.pipeline import load_benchmark
from harness.pool import load_pool
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
        ({"seed": 1}, "missing required key 'router'"),
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
        "name: x\nmodels:\n  - {name: a, price: {input_per_mtok: 1, output_per_mtok: 2}, simulated: {skill: {default: 1.5}}}\n"
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
