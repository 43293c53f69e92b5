"""ScienceWorld 1.2.3 as a deterministic, fast :class:`~harness.protocols.Environment`.

Why not just use ``scienceworld.ScienceWorldEnv``:

* Determinism. The engine iterates objects in identity-hash order, and a JVM's
  identity hashes depend on everything it did before (seen: the same actions
  diverge at the 3rd step after the JVM ran another task). ``-XX:hashCode=2``
  makes every identity hash the same constant, so order is insertion order.
* Speed. The stock ``step`` also builds the look/inventory texts and the full
  valid-action list (thousands of strings, fetched one py4j round trip each)
  on every call. We call the server's ``step``/``getScore``/``getCompleted``/
  ``getNumMoves`` only, and build the valid-action list only when asked.
* Valid actions without side effects. The engine names look-alike objects
  (three "paint" cups) by drawing from the global ``scala.util.Random``, the
  same generator that moves animals and breeds plants. Asking for the
  valid-action list therefore changed the rest of the episode (seen on
  grow-fruit and mendelian-genetics). We save that generator's seed before the
  call and put it back after, which needs ``--add-opens java.base/java.util``.
  Consequence: the stock env (and the engine's gold agent) list valid actions
  every step and so draw from that generator every step; we do not. Where
  look-alike objects and random processes (bees, wandering animals, genetics)
  meet, the same actions can lead to a different (equally valid) world than in
  the stock env, and a few engine gold paths then miss 100 here (see the
  ``replay_score`` recorded per gold path). Reproducing the stock draws costs
  ~40 ms per step (the universe-wide naming pass), most of what we save.
* Cheap resets. ``load(generateGoldPath=False)`` instead of ``reset()``: the
  stock ``reset`` reloads with the JVM's last gold flag, so after one gold
  request every reset would regenerate a gold path (seconds each).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from pathlib import Path

import scienceworld
from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
from py4j.protocol import Py4JError, Py4JJavaError
from scienceworld.constants import BASEPATH, JAR_PATH

from harness.benchmarks.scienceworld.oracle import GoldOracle, GoldReplica
from harness.benchmarks.scienceworld.split import TOPICS
from harness.errors import EnvironmentCrashed, MissingDependencyError, UnknownNameError
from harness.types import Action, StepResult, TaskInstance

DEFAULT_HEAP = "256m"

JVM_FLAGS: list[str] = [
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:hashCode=2",  # constant identity hash: object iteration order no longer varies per JVM
    f"-Xmx{DEFAULT_HEAP}",
    "-XX:+UseSerialGC",  # one GC thread: lean on a 2-core machine, no GC-timing effects
    "--add-opens=java.base/java.util=ALL-UNNAMED",  # lets us save/restore the engine's RNG seed
]

# Observations with which ScienceWorld 1.2.3 says it did not understand the input.
# The second one is what the server returns when the engine produced no text,
# e.g. for a non-number typed at an ambiguity prompt (that one costs a tick).
NOT_UNDERSTOOD = "No known action matches that input."
EMPTY_RESPONSE_PREFIX = "Unknown action."

_JAVA_UTIL_RANDOM_MULTIPLIER = 0x5DEECE66D  # setSeed(x) stores x ^ this; undo it to restore a raw seed
_READ_TIMEOUT_SECONDS = 600


def jvm_flags(heap: str = DEFAULT_HEAP) -> list[str]:
    return [f"-Xmx{heap}" if flag.startswith("-Xmx") else flag for flag in JVM_FLAGS]


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise MissingDependencyError(
            "ScienceWorld needs Java 11+ on PATH: install it, e.g. `apt-get install -y openjdk-17-jre-headless`"
        )
    return java


@functools.lru_cache(maxsize=1)
def _java_version() -> str:
    out = subprocess.run([_require_java(), "-version"], capture_output=True, text=True, check=True)
    return (out.stderr or out.stdout).splitlines()[0].strip()


@functools.lru_cache(maxsize=1)
def _jar_sha256() -> str:
    return hashlib.sha256(Path(JAR_PATH).read_bytes()).hexdigest()


def engine_fingerprint(heap: str = DEFAULT_HEAP) -> dict:
    """What a result must record to be reproducible: engine, JVM and its flags."""
    return {
        "scienceworld": scienceworld.__version__,
        "jar_sha256": _jar_sha256()[:16],
        "java": _java_version(),
        "jvm_flags": jvm_flags(heap),
    }


class ScienceWorldJvm:
    """One ScienceWorld server in its own JVM, reached over py4j.

    Shared by the episode environment and the gold-path generator so that both
    start, talk to and kill the JVM the same way.
    """

    def __init__(self, heap: str = DEFAULT_HEAP):
        java = _require_java()
        self.heap = heap
        self.stderr: deque[str] = deque(maxlen=20)  # py4j appends on the left: [0] is the newest line
        port, self.process = launch_gateway(
            classpath=JAR_PATH,
            javaopts=jvm_flags(heap),
            java_path=java,
            die_on_exit=True,  # the JVM exits when our stdin pipe closes, even if Python is SIGKILLed
            cwd=BASEPATH,
            redirect_stderr=self.stderr,
            return_proc=True,
        )
        atexit.register(self.close)
        self.gateway = JavaGateway(
            gateway_parameters=GatewayParameters(
                port=port, auto_field=True, read_timeout=_READ_TIMEOUT_SECONDS
            ),
            java_process=self.process,
        )
        jvm = self.gateway.jvm
        self.server = jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self._join = jvm.java.lang.String.join
        scala_random = jvm.java.lang.Class.forName("scala.util.Random$").getField("MODULE$").get(None)
        self._rng = scala_random.self()
        self._rng_seed = jvm.java.lang.Class.forName("java.util.Random").getDeclaredField("seed")
        self._rng_seed.setAccessible(True)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def valid_actions(self) -> list[str]:
        """Sorted valid actions, fetched as one joined string."""
        return self._joined_without_rng_draws(self.server.getValidActionObjectCombinations)

    def visible_objects(self) -> list[str]:
        """Unique names of the objects the agent sees (a few ms, against ~50 ms for valid actions)."""
        return self._joined_without_rng_draws(self.server.getPossibleObjects)

    def _joined_without_rng_draws(self, fetch: Callable) -> list[str]:
        """One round trip for the whole list, with the engine's RNG left as it was (see module docstring)."""
        seed = self._rng_seed.get(self._rng)
        try:
            joined = self._join("\n", fetch())
        finally:
            self._rng.setSeed(seed ^ _JAVA_UTIL_RANDOM_MULTIPLIER)
        return joined.split("\n") if joined else []

    def close(self) -> None:
        client = self.gateway._gateway_client
        if self.alive:
            self.gateway.shutdown()
        else:
            # py4j's shutdown retries a dead socket recursively, logging each try; and proxies
            # still held by callers would ping the dead port when garbage-collected.
            client.is_connected = False
            client.close()
        _kill_process(self.process)
        atexit.unregister(self.close)


def _kill_process(process: subprocess.Popen) -> None:
    """Close stdin (the server exits on a broken pipe), then kill if needed, then reap: no zombies."""
    if process.poll() is None:
        try:
            process.stdin.close()
            process.wait(timeout=3)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
    process.wait()


class ScienceWorldEnv:
    """ScienceWorld episodes in one private JVM. Scores are integers in -100..100.

    ``StepResult.valid`` is False when the engine did not understand the input
    ("No known action matches that input." or the server's "Unknown action."
    reply to input that produced no text). An ambiguity prompt ("Ambiguous
    request: Please enter the number ...") counts as valid: the engine
    understood the words and asks which object was meant; it costs no tick and
    the next input is read as the number of the choice.
    """

    def __init__(
        self,
        step_limit_ticks: int = 10_000,
        jvm_heap: str = DEFAULT_HEAP,
        gold: dict[tuple[str, int], list[str]] | None = None,
    ):
        self.step_limit_ticks = step_limit_ticks
        self.jvm_heap = jvm_heap
        self._gold = gold or {}
        self._task: TaskInstance | None = None
        self._oracle: GoldOracle | None = None
        self._jvm: ScienceWorldJvm | None = None
        self._jvm = ScienceWorldJvm(jvm_heap)

    # -- lifecycle ---------------------------------------------------------

    @property
    def jvm_pid(self) -> int:
        return self._live_jvm("jvm_pid").pid

    def restart(self) -> None:
        """Replace the JVM with a fresh one; the current episode is lost."""
        self.close()
        self._task = None
        self._oracle = None
        self._jvm = ScienceWorldJvm(self.jvm_heap)

    def close(self) -> None:
        if self._jvm is not None:
            self._jvm.close()
            self._jvm = None

    def __enter__(self) -> ScienceWorldEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- episode -----------------------------------------------------------

    def reset(self, task: TaskInstance) -> tuple[str, str]:
        self._task = task
        where = f"reset of {task.task}/{task.variation}"
        jvm = self._live_jvm(where)
        error = self._call(where, jvm.server.load, task.task, task.variation, "", False)
        if error:
            self._task = None
            raise UnknownNameError(f"ScienceWorld cannot load {task.task}/{task.variation}: {error}")
        description = self._call(where, jvm.server.getTaskDescription)
        observation = self._call(where, jvm.server.step, "look around")
        gold = self._gold.get((task.task, task.variation))
        topic = TOPICS.get(task.task, "default")
        self._oracle = GoldOracle(gold, self.visible_objects, topic) if gold is not None else None
        return description, observation

    def step(self, action: Action) -> StepResult:
        return self.send(action.text)

    def send(self, action: str) -> StepResult:
        """One text command to the engine."""
        where = f"step {action!r}"
        jvm = self._live_jvm(where)
        server = jvm.server
        observation = self._call(where, server.step, action)
        score = int(round(100 * self._call(where, server.getScore)))
        completed = self._call(where, server.getCompleted)
        ticks = self._call(where, server.getNumMoves)
        if self._oracle is not None:
            self._oracle.observe(action)
        done = bool(completed) or score < 0 or ticks > self.step_limit_ticks
        valid = not (observation == NOT_UNDERSTOOD or observation.startswith(EMPTY_RESPONSE_PREFIX))
        return StepResult(observation=observation, score=score, done=done, valid=valid)

    def valid_actions(self) -> list[str]:
        """The engine's valid actions for the current state, sorted; ~50 ms, so only on demand.

        Large states (mendelian genetics: ~30 000 actions) need more than the
        default 256 MiB heap; the resulting OutOfMemoryError is raised as
        EnvironmentCrashed naming ``jvm_heap``.
        """
        return self._call("valid_actions", self._live_jvm("valid_actions").valid_actions)

    def visible_objects(self) -> list[str]:
        """Names under which the objects in view can be referred to."""
        return self._call("visible_objects", self._live_jvm("visible_objects").visible_objects)

    def ticks(self) -> int:
        """Engine moves so far (free actions such as "look around" cost none)."""
        return self._call("ticks", self._live_jvm("ticks").server.getNumMoves)

    @property
    def oracle(self) -> GoldOracle | None:
        return self._oracle

    def oracle_replica(self) -> GoldReplica:
        """The oracle as the replay prefix cache rebuilds it off the engine (same gold paths, same topics)."""
        return GoldReplica(self._gold, TOPICS)

    # -- internals ---------------------------------------------------------

    def _live_jvm(self, where: str) -> ScienceWorldJvm:
        """The JVM, checked alive first (a cheap waitpid) so a dead one fails cleanly, without py4j retries."""
        if self._jvm is None:
            raise EnvironmentCrashed(f"ScienceWorld environment is closed; call restart() before {where}")
        if not self._jvm.alive:
            raise self._crashed(where, None)
        return self._jvm

    def _call(self, where: str, fn, *args):
        try:
            return fn(*args)
        except Py4JError as exc:
            raise self._crashed(where, exc) from exc

    def _crashed(self, where: str, exc: Py4JError | None) -> EnvironmentCrashed:
        jvm = self._jvm
        episode = f"{self._task.task}/{self._task.variation}" if self._task else "no task"
        if jvm is not None and jvm.alive and isinstance(exc, Py4JJavaError):
            first_line = str(exc.java_exception).splitlines()[0]
            hint = f" (jvm_heap={jvm.heap!r} is too small)" if "OutOfMemoryError" in first_line else ""
            return EnvironmentCrashed(
                f"ScienceWorld JVM raised {first_line} during {where} of {episode}{hint}"
            )
        pid = jvm.pid if jvm is not None else "?"
        code = jvm.process.poll() if jvm is not None else None
        status = (
            f"exit code {code}" if code is not None else f"no answer within {_READ_TIMEOUT_SECONDS} s, killed"
        )
        last_err = jvm.stderr[0].strip() if jvm is not None and jvm.stderr else ""
        detail = f" ({status}{'; ' + last_err if last_err else ''})"
        if jvm is not None:
            jvm.close()
            self._jvm = None
        return EnvironmentCrashed(f"ScienceWorld JVM (pid {pid}) died during {where} of {episode}{detail}")
