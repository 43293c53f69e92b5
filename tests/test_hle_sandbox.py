"""The python tool's sandbox against real hostile programs, in real bubblewrap sandboxes."""

from __future__ import annotations

import ast
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

import harness
from harness.benchmarks.hle.sandbox import RUN_ID_ENV, PythonSandbox, SandboxLimits
from harness.errors import ConfigError, MissingDependencyError

FAST = SandboxLimits(wall_time_s=3.0, cpu_time_s=20, memory_bytes=512 << 20, processes=16)
# Filling 512 MiB can take longer than FAST's wall limit on a busy machine.
MEMORY_BOMB_LIMITS = SandboxLimits(wall_time_s=30.0, cpu_time_s=20, memory_bytes=512 << 20, processes=16)
MEMORY_BOMB = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"
UNPRIVILEGED_USER = "harness-test"  # an ordinary account, made by .ci/install-sandbox.sh
SANDBOX_ENVIRONMENT = {  # what a program inside may see: the allow-list, the run's tag, bwrap's PWD
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MPLBACKEND",
    RUN_ID_ENV,
    "PWD",
}
# Reads the environment of every process the program can see, bubblewrap's init (PID 1) included.
ENVIRON_PROBE = """
import glob, json
seen = {}
for path in sorted(set(glob.glob("/proc/*/environ") + glob.glob("/proc/*/task/*/environ"))):
    try:
        with open(path, "rb") as f:
            seen[path] = f.read().decode("utf-8", "replace")
    except OSError as exc:
        seen[path] = "refused: " + type(exc).__name__
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def sandbox() -> PythonSandbox:
    return PythonSandbox(FAST)


def sandbox_pids(run_id: str | None = None) -> list[int]:
    """Host processes started inside a sandbox (any sandbox, or the one with ``run_id``)."""
    marker = f"{RUN_ID_ENV}={run_id}".encode() if run_id else f"{RUN_ID_ENV}=".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def own_children() -> set[int]:
    """Pids of this process's children (other tests may leave some, e.g. multiprocessing's resource tracker)."""
    me = str(os.getpid())
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                children.add(int(entry.name))
    return children


@pytest.fixture(autouse=True)
def children_before() -> None:
    """The children this process had before the test: the sandbox must leave no more."""
    global CHILDREN_BEFORE
    CHILDREN_BEFORE = own_children()


CHILDREN_BEFORE: set[int] = set()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def assert_host_unharmed(run_id: str, rss_before: int) -> None:
    deadline = time.monotonic() + 2.0
    while sandbox_pids(run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_pids(run_id) == []
    assert own_children() <= CHILDREN_BEFORE
    assert rss_bytes() - rss_before < 64 << 20


def test_normal_computation_returns_its_output(sandbox: PythonSandbox) -> None:
    result = sandbox.run(
        "import sympy\nprint(sympy.factorint(2**32 + 1))\nprint(sum(i * i for i in range(10)))"
    )
    assert result.ok, result.stderr
    assert result.exit_status == 0 and result.limit is None and result.tool_error is None
    assert result.stdout == "{641: 1, 6700417: 1}\n285\n"
    assert result.render() == "{641: 1, 6700417: 1}\n285"


def test_program_error_is_one_clear_line(sandbox: PythonSandbox) -> None:
    result = sandbox.run("print('before')\nraise ValueError('boom')")
    assert not result.ok and result.exit_status == 1 and result.limit is None
    assert result.tool_error == "python tool error: exited with status 1 (ValueError: boom)"
    assert result.render().startswith("before\n[stderr]\nTraceback")
    assert result.render().endswith(result.tool_error)


def test_infinite_loop_is_stopped_at_the_wall_time_limit(sandbox: PythonSandbox) -> None:
    rss = rss_bytes()
    result = sandbox.run("while True:\n    pass")
    assert result.limit == "wall_time" and result.exit_status is None
    assert FAST.wall_time_s <= result.duration_s < FAST.wall_time_s + 2
    assert result.tool_error == "python tool error: stopped after the 3 s wall-time limit"
    assert_host_unharmed(result.run_id, rss)


def test_cpu_time_limit_kills_a_busy_loop() -> None:
    result = PythonSandbox(SandboxLimits(wall_time_s=20, cpu_time_s=1)).run("while True:\n    pass")
    assert result.limit == "cpu_time"
    assert result.duration_s < 5
    assert "CPU-time limit" in result.tool_error


def test_fork_bomb_is_capped_and_leaves_nothing_behind(sandbox: PythonSandbox) -> None:
    rss = rss_bytes()
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(sandbox_pids()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # The parent survives its failed forks, so the bomb churns at the cap until the wall clock ends it.
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    try:
        result = sandbox.run(code)
    finally:
        stop.set()
        watcher.join()
    assert not result.ok
    assert result.limit in ("processes", "wall_time")
    assert result.tool_error.startswith("python tool error: ")
    assert 1 < peak <= FAST.processes
    assert_host_unharmed(result.run_id, rss)


def test_classic_fork_bomb_reports_the_process_limit(sandbox: PythonSandbox) -> None:
    rss = rss_bytes()
    result = sandbox.run("import os\nwhile True:\n    os.fork()")
    if sandbox.uses_cgroup:
        assert result.limit == "processes"
        assert "process limit (16 processes)" in result.tool_error
    else:
        assert result.limit is None and "Resource temporarily unavailable" in result.tool_error
    assert_host_unharmed(result.run_id, rss)


def test_this_machine_bounds_each_root_call_by_a_cgroup(sandbox: PythonSandbox) -> None:
    """The suite's machines give root writable cgroup v1 hierarchies; elsewhere the rlimit fallback runs."""
    if os.geteuid() != 0:
        pytest.skip("cgroups are made only by root here; the fallback is covered by the non-root tests")
    assert sandbox.uses_cgroup


def test_limit_labels_do_not_come_from_the_programs_output(sandbox: PythonSandbox) -> None:
    for text in ("MemoryError", "BlockingIOError: [Errno 11] Resource temporarily unavailable"):
        result = sandbox.run(f"import sys\nsys.stderr.write({text!r} + '\\n')\nsys.exit(1)")
        assert result.limit is None and result.exit_status == 1
        assert result.tool_error == f"python tool error: exited with status 1 ({text})"
    result = sandbox.run("raise MemoryError")
    assert result.limit is None
    assert result.tool_error == "python tool error: exited with status 1 (MemoryError)"


def test_a_program_that_closes_its_outputs_is_still_stopped_at_the_wall_limit(sandbox: PythonSandbox) -> None:
    rss = rss_bytes()
    code = "import os, time\nprint('result')\nos.close(1)\nos.close(2)\ntime.sleep(60)"
    result = sandbox.run(code)
    assert result.limit == "wall_time" and result.exit_status is None
    assert result.stdout == "result\n"
    assert FAST.wall_time_s <= result.duration_s < FAST.wall_time_s + 2
    assert_host_unharmed(result.run_id, rss)


def test_a_sandbox_that_ended_by_the_wall_limit_is_not_reported_killed(tmp_path: Path) -> None:
    """A sandbox whose program is done but whose pipes close late (a slow PID-namespace teardown).

    The stand-in for bubblewrap prints the result and exits 0 at once, leaving a process that
    holds its output open past the wall limit; it has finished, so no limit stopped it.
    """
    fake = tmp_path / "bwrap"
    # The start-up self-check (argv ending in "-c pass") just succeeds.
    fake.write_text('#!/bin/sh\ncase "$*" in *main.py) echo result; (sleep 8) & ;; esac\nexit 0\n')
    fake.chmod(0o755)
    limits = SandboxLimits(wall_time_s=2.0)
    sandbox = PythonSandbox(limits, bwrap=str(fake))
    result = sandbox.run("print('result')")
    assert result.ok and result.limit is None and result.exit_status == 0
    assert result.stdout == "result\n"
    assert result.duration_s < limits.wall_time_s + 2


def test_memory_bomb_is_stopped_not_the_host() -> None:
    rss = rss_bytes()
    sandbox = PythonSandbox(MEMORY_BOMB_LIMITS)
    result = sandbox.run(MEMORY_BOMB)
    if sandbox.uses_cgroup:  # the call's cgroup OOM-kills it, and counts the kill
        assert result.limit == "memory"
        assert result.tool_error == "python tool error: ran out of memory (limit 512 MiB)"
    else:  # the address-space rlimit makes its allocation fail; nothing outside observes that
        assert result.limit is None
        assert result.tool_error == "python tool error: exited with status 1 (MemoryError)"
    assert_host_unharmed(result.run_id, rss)


def test_network_connection_to_a_host_loopback_server_fails_inside(sandbox: PythonSandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the server is reachable from the host
        server.accept()[0].close()
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        )
        result = sandbox.run(code)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing from the sandbox arrived
    assert "connected" not in result.stdout
    assert result.exit_status == 1
    assert "ConnectionRefusedError" in result.tool_error


def test_files_outside_the_sandbox_cannot_be_read_or_written(sandbox: PythonSandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret 4711")
    escape = tmp_path / "escape.txt"
    code = f"""
import os
for path in [{str(secret)!r}, {str(Path(__file__).resolve())!r}, "/etc/passwd"]:
    try:
        print("READ", open(path).read())
    except OSError as exc:
        print("refused", type(exc).__name__)
for path in [{str(escape)!r}, "/usr/escape.txt", "/escape.txt"]:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("refused", type(exc).__name__)
open("inside.txt", "w").write("ok")
print(open("/sandbox/inside.txt").read())
"""
    result = sandbox.run(code)
    assert result.ok, result.stderr
    assert "READ" not in result.stdout and "WROTE" not in result.stdout and "4711" not in result.stdout
    assert result.stdout.count("refused") == 6
    assert result.stdout.endswith("ok\n")  # its own temp dir is writable
    assert not escape.exists()
    assert not Path("/usr/escape.txt").exists()


def test_each_call_gets_a_fresh_temp_dir(sandbox: PythonSandbox) -> None:
    assert sandbox.run("open('left.txt', 'w').write('x')").ok
    result = sandbox.run("import os\nprint(sorted(os.listdir('.')))")
    assert result.stdout == "['main.py']\n"


def test_printing_100_mb_is_cut_at_the_output_limit(sandbox: PythonSandbox) -> None:
    rss = rss_bytes()
    result = sandbox.run("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)")
    assert result.limit == "output" and result.exit_status is None
    assert len(result.stdout) + len(result.stderr) <= FAST.output_bytes
    assert result.stdout.startswith("xxxx")
    assert result.duration_s < FAST.wall_time_s
    assert result.tool_error == f"python tool error: stopped: output exceeded {FAST.output_bytes} bytes"
    assert_host_unharmed(result.run_id, rss)


def test_missing_bubblewrap_is_a_one_line_refusal() -> None:
    with pytest.raises(MissingDependencyError) as err:
        PythonSandbox(bwrap="no-such-bwrap")
    message = str(err.value)
    assert "\n" not in message
    assert "bubblewrap (bwrap) not found" in message and "install-sandbox.sh" in message


def test_bubblewrap_that_cannot_build_namespaces_is_a_one_line_refusal(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(MissingDependencyError) as err:
        PythonSandbox(bwrap=str(fake))
    message = str(err.value)
    assert "\n" not in message
    assert "No permissions to create new namespace" in message and "namespaces" in message


def test_silent_success_and_bad_limits(sandbox: PythonSandbox) -> None:
    assert sandbox.run("x = 1").render() == "(no output)"
    with pytest.raises(ConfigError, match="sandbox limit processes must be > 0, got 0"):
        SandboxLimits(processes=0)


def planted_secrets() -> dict[str, str]:
    token = uuid.uuid4().hex
    return {"OPENAI_API_KEY": f"sk-planted-{token}", "HARNESS_TEST_SECRET": f"secret-{token}"}


def assert_no_environment_leaks(stdout: str, secrets: dict[str, str], run_as_root: bool) -> None:
    seen = json.loads(stdout)
    assert "/proc/1/environ" in seen and "/proc/self/environ" in seen
    for secret in secrets.values():
        assert secret not in stdout
    for path, environ in seen.items():
        if environ.startswith("refused: "):
            # Only root's sandbox hides bubblewrap's init (a root process) from its uid-65534 program.
            assert run_as_root and path.startswith("/proc/1/"), (path, environ)
            continue
        names = {item.split("=", 1)[0] for item in environ.split("\0") if item}
        assert names <= SANDBOX_ENVIRONMENT, (path, names - SANDBOX_ENVIRONMENT)


def test_nothing_inside_can_read_the_harness_environment(
    sandbox: PythonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = planted_secrets()
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    result = sandbox.run(ENVIRON_PROBE)
    assert result.ok, result.stderr
    assert_no_environment_leaks(result.stdout, secrets, run_as_root=os.geteuid() == 0)


RunAsUser = Callable[[str, SandboxLimits, dict[str, str]], dict]


@pytest.fixture(scope="module")
def run_as_unprivileged_user() -> Iterator[RunAsUser]:
    """Runs one sandbox call from a harness process of an ordinary (non-root) user.

    As root the call goes through ``runuser`` to :data:`UNPRIVILEGED_USER`. That user may not
    be able to read this checkout or its venv (both can sit under root's private home), so
    the sandbox module and its one project import are copied into a world-readable temp
    directory; the interpreter is the first of this one and the system's that the user can run.
    """
    package = Path(harness.__file__).parent
    source = (package / "benchmarks/hle/sandbox.py").read_text()
    nodes = list(ast.walk(ast.parse(source)))
    imported = {node.module for node in nodes if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name and name.split(".")[0] == "harness"} == {"harness.errors"}, (
        "the sandbox module gained a project import: copy it too"
    )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            pytest.fail(f"no user {UNPRIVILEGED_USER!r} to run the sandbox as; run .ci/install-sandbox.sh")
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        assert runuser, "runuser (util-linux) not found"
        prefix = [runuser, "-u", UNPRIVILEGED_USER, "--"]
    else:
        prefix = []
    root = Path(tempfile.mkdtemp(prefix="sandbox-as-user-"))
    try:
        for relative in ("__init__.py", "errors.py", "benchmarks/hle/sandbox.py"):
            (root / "harness" / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package / relative, root / "harness" / relative)
        for relative in ("benchmarks/__init__.py", "benchmarks/hle/__init__.py"):
            (root / "harness" / relative).write_text("")  # the real ones import the whole harness
        shutil.copyfile(Path(__file__).with_name("sandbox_as_user.py"), root / "sandbox_as_user.py")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        candidates = [sys.executable, "/usr/bin/python3"]
        usable = [
            python
            for python in candidates
            if subprocess.run([*prefix, python, "-c", "pass"], cwd=root, capture_output=True).returncode == 0
        ]
        if not usable:
            pytest.fail(
                f"user {UNPRIVILEGED_USER!r} can run none of {candidates}; run .ci/install-sandbox.sh"
            )

        def run(code: str, limits: SandboxLimits, environment: dict[str, str]) -> dict:
            done = subprocess.run(
                [*prefix, usable[0], str(root / "sandbox_as_user.py")],
                input=json.dumps({"code": code, "limits": asdict(limits)}),
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), **environment},
                cwd=root,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
            assert answer["euid"] != 0
            return answer

        yield run
    finally:
        shutil.rmtree(root)


def test_as_an_ordinary_user_nothing_inside_can_read_the_harness_environment(
    run_as_unprivileged_user: RunAsUser,
) -> None:
    secrets = planted_secrets()
    answer = run_as_unprivileged_user(ENVIRON_PROBE, FAST, secrets)
    for name, value in secrets.items():
        assert answer["harness_environment"][name] == value  # the harness process did hold them
    assert answer["exit_status"] == 0 and answer["limit"] is None, answer["stderr"]
    assert_no_environment_leaks(answer["stdout"], secrets, run_as_root=False)


def test_as_an_ordinary_user_limit_labels_are_what_was_observed(run_as_unprivileged_user: RunAsUser) -> None:
    answer = run_as_unprivileged_user("import sys\nsys.stderr.write('MemoryError\\n')\nsys.exit(1)", FAST, {})
    assert answer["limit"] is None
    assert answer["tool_error"] == "python tool error: exited with status 1 (MemoryError)"
    answer = run_as_unprivileged_user("while True:\n    pass", FAST, {})
    assert answer["limit"] == "wall_time" and answer["exit_status"] is None
    answer = run_as_unprivileged_user(MEMORY_BOMB, MEMORY_BOMB_LIMITS, {})
    assert not answer["uses_cgroup"] and answer["limit"] is None
    assert answer["tool_error"] == "python tool error: exited with status 1 (MemoryError)"
