"""The python tool's sandbox against real hostile programs, in real bubblewrap sandboxes."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from harness.benchmarks.hle.sandbox import RUN_ID_ENV, PythonSandbox, SandboxLimits
from harness.errors import ConfigError, MissingDependencyError

FAST = SandboxLimits(wall_time_s=3.0, cpu_time_s=20, memory_bytes=512 << 20, processes=16)


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
    assert result.limit == "processes"
    assert "process limit (16 processes)" in result.tool_error
    assert_host_unharmed(result.run_id, rss)


def test_memory_bomb_gets_memory_error_not_the_host(sandbox: PythonSandbox) -> None:
    rss = rss_bytes()
    result = sandbox.run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))")
    assert result.limit == "memory"
    assert result.tool_error == "python tool error: ran out of memory (limit 512 MiB) (MemoryError)"
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
