"""The Ray executor against the local pool: real engine, real local Ray instance, real SIGKILL of an actor.

The same batches through both executors give the same episode and turn records;
an actor killed mid-episode is replaced, its episode played again from the start
(the partial turns kept aside), the batch completes with every episode once and
the records still match the local pool's, and the killed actor's JVM does not
outlive it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest
from accounting import assert_every_dollar_accounted
from services import unavailable
from typer.testing import CliRunner

from harness.batch import Workers, execute
from harness.cli import app
from harness.config import Limits, RouterSpec, RunConfig, run_config
from harness.errors import ConfigError
from harness.executors import RayExecutor, open_executor
from harness.procfs import alive, children, cmdline
from harness.records import EpisodeRecord, TurnRecord
from harness.trajectory import EPISODES_FILE, RunStore

pytestmark = pytest.mark.scale

# Four episodes each (find-animal, find-plant of the quick train split).
ROUTERS = [RouterSpec("random"), RouterSpec("single", {"model": "gpt-oss-120b"})]


def config(router: RouterSpec, executor: str = "local") -> RunConfig:
    return RunConfig(
        router=router,
        split="train",
        quick=True,
        task_filter="find",
        limits=Limits(max_turns=15),
        workers=2,
        executor=executor,
    )


def records(out: Path) -> dict[str, EpisodeRecord]:
    """Episode records by key, without the wall-clock duration."""
    return {r.episode: dataclasses.replace(r, duration_s=None) for r in RunStore(out).episodes()}


def turn_files(out: Path) -> dict[str, list[dict]]:
    return {
        p.name: [{k: v for k, v in json.loads(x).items() if k != "times"} for x in p.read_text().splitlines()]
        for p in (out / "turns").iterdir()
    }


@pytest.fixture(scope="module")
def local_ray():
    """A private Ray instance on loopback with two CPUs, stopped after the module."""
    try:
        import ray
    except ModuleNotFoundError:
        unavailable("Ray is not installed: pip install -e '.[scale]'")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both routers' batches on the local pool, one worker process per JVM as in production."""
    root = tmp_path_factory.mktemp("local")
    with Workers(2) as workers:
        for router in ROUTERS:
            execute(config(router), root / router.label, workers=workers)
    return root


def test_the_ray_executor_gives_the_local_pools_records(local_ray, local_runs: Path, tmp_path: Path):
    with RayExecutor(2) as executor:
        for router in ROUTERS:
            execute(config(router, "ray"), tmp_path / router.label, workers=executor)
        assert len(executor.actors) == 2  # the same two actors (and JVMs) played both batches
    for router in ROUTERS:
        ray_run, local_run = tmp_path / router.label, local_runs / router.label
        expected = records(local_run)
        assert len(expected) == 4 and all(r.status != "failed" for r in expected.values())
        assert records(ray_run) == expected
        # Turn by turn: the same models, scores, costs and messages.
        assert turn_files(ray_run) == turn_files(local_run)
        models = {k: [t["model"] for t in v] for k, v in turn_files(ray_run).items()}
        assert all(models.values())
        if router.name == "single":
            assert {m for ms in models.values() for m in ms} == {"gpt-oss-120b"}
    # The run directory records what was played, not where: a Ray run resumes on the local pool.
    assert (
        execute(config(ROUTERS[0]), tmp_path / ROUTERS[0].label)
        == RunStore(tmp_path / ROUTERS[0].label).episodes()
    )


def test_an_actor_killed_mid_episode_is_replaced_and_its_episode_played_again(
    local_ray, local_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    out = tmp_path / "run"
    victim: dict[str, object] = {}
    executor = RayExecutor(1)
    record_turn = RunStore.record_turn

    def kill_after_third_turn(store: RunStore, path: Path, line: TurnRecord) -> None:
        """In the parent, as it writes the third turn of the first episode: SIGKILL the actor playing it."""
        record_turn(store, path, line)
        if line.turn == 2 and not victim:
            pid = executor.playing()[line.episode]
            victim.update(
                episode=line.episode,
                pid=pid,
                jvms=[c for c in children(pid) if "GatewayServer" in cmdline(c)],
            )
            os.kill(pid, signal.SIGKILL)

    monkeypatch.setattr(RunStore, "record_turn", kill_after_third_turn)
    with executor, caplog.at_level(logging.WARNING, logger="harness.executors"):
        execute(config(ROUTERS[0], "ray"), out, workers=executor)
        fresh = set(executor.actors.values())

    assert victim["jvms"], "the actor ran its JVM"
    assert "died; starting a fresh one" in caplog.text
    assert victim["pid"] not in fresh
    lines = (out / EPISODES_FILE).read_text().splitlines()
    keys = [json.loads(line)["episode"] for line in lines]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4
    # Played again from its start: the killed attempt's turns are kept aside, the final file is whole.
    name = str(victim["episode"]).replace("/", "__")
    aside = out / "turns" / f"{name}.interrupted-1.jsonl"
    assert len(aside.read_text().splitlines()) >= 3
    # The same records as the local pool's, but for the killed attempt the replay's record carries.
    replayed, local = records(out), records(local_runs / ROUTERS[0].label)
    killed = replayed[victim["episode"]]
    assert killed.attempts == 2 and killed.abandoned_cost > 0
    assert_every_dollar_accounted(out)
    replayed[victim["episode"]] = dataclasses.replace(killed, attempts=1, abandoned_cost=0.0)
    assert replayed == local
    deadline = time.monotonic() + 15
    while any(alive(j) for j in victim["jvms"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [j for j in victim["jvms"] if alive(j)], "the killed actor's JVM outlived it"


def test_executor_choices_are_checked_before_any_work(tmp_path: Path):
    with pytest.raises(ConfigError, match="executor: input should be 'local' or 'ray', got 'dask'"):
        run_config(router="random", executor="dask")
    with pytest.raises(ConfigError, match="add --executor ray"):
        open_executor("local", 2, ray_address="127.0.0.1:6379")
    out = tmp_path / "run"
    for extra in (["--executor", "dask"], ["--ray-address", "127.0.0.1:6379"]):
        result = CliRunner().invoke(app, ["run", "--out", str(out), "--router", "random", *extra])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
