"""The HLE ``python`` tool: model-written code in a bubblewrap sandbox, never on the host.

The reference implementation runs such code unsandboxed when no sandbox endpoint is
configured; here there is no unsandboxed path. Each call gets:

- new network, PID, IPC and UTS namespaces (``bwrap --unshare-net`` ...): the only
  interface is a loopback that nothing listens on, so no host or remote service is
  reachable, loopback servers of the host included;
- a filesystem of its own: a size-limited tmpfs at ``/sandbox`` (its temp dir, home and
  working directory) plus read-only binds of ``/usr`` and the Python runtime
  (the interpreter's prefixes, so numpy/sympy in that environment can be imported);
  nothing else of the host exists inside;
- an unprivileged user: as root, bubblewrap builds the mounts and ``setpriv`` drops to
  uid/gid 65534 with no capabilities and no-new-privs (RLIMIT_NPROC does not bind
  root, so without this drop a fork bomb would be unlimited); as another user,
  bubblewrap's user namespace does the same;
- rlimits set by ``prlimit`` inside the sandbox: CPU seconds, address space, process
  count, file size and open files;
- wall time and output size enforced here, by the reader of its pipes, which kills the
  whole sandbox (its PID namespace dies with it) the moment either is exceeded.

Which limit fired is exact for wall time and output (this side enforces them) and for
CPU time (the kernel's SIGXCPU); memory and process-count exhaustion surface inside the
program as MemoryError / "Resource temporarily unavailable" and are read from its stderr.

Memory and process limits are rlimits, so they bind each process: the sandbox as a whole
can hold at most ``processes x memory_bytes`` of address space (8 GiB with the defaults).
An aggregate bound needs a cgroup, which this container's cgroup tree is not ours to
reshape; keep the product of the two below what the machine can spare.

Debian packages: ``bubblewrap`` (bwrap) and ``util-linux`` (setpriv, prlimit);
``.ci/install-sandbox.sh`` installs them.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import ConfigError, MissingDependencyError

Limit = Literal["wall_time", "cpu_time", "memory", "output", "processes"]

SANDBOX_DIR = "/sandbox"
SCRIPT_NAME = "main.py"
SHM_BYTES = 16 << 20
SANDBOX_UID = 65534  # "nobody" on Debian
RUN_ID_ENV = "SANDBOX_RUN_ID"
INSTALL_HINT = "run .ci/install-sandbox.sh (apt-get install -y bubblewrap util-linux)"
READ_CHUNK = 65536
ERROR_DETAIL_CHARS = 200
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc")
_PROCESS_MARKERS = (
    "Resource temporarily unavailable",
    "BlockingIOError: [Errno 11]",
    "can't start new thread",
)


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call limits; defaults follow the reference's 120 s python tool timeout."""

    wall_time_s: float = 120.0
    cpu_time_s: int = 120
    memory_bytes: int = 1 << 30  # address space per process
    output_bytes: int = 1 << 20  # stdout and stderr together
    processes: int = 8  # processes and threads of the sandbox user
    disk_bytes: int = 64 << 20  # size of the /sandbox tmpfs
    open_files: int = 256

    def __post_init__(self) -> None:
        for name in (
            "wall_time_s",
            "cpu_time_s",
            "memory_bytes",
            "output_bytes",
            "processes",
            "disk_bytes",
            "open_files",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"sandbox limit {name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class SandboxResult:
    """What one python call did. ``exit_status`` is None when the sandbox was killed from outside."""

    stdout: str
    stderr: str
    exit_status: int | None
    limit: Limit | None
    duration_s: float
    run_id: str
    limits: SandboxLimits

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.limit is None

    @property
    def tool_error(self) -> str | None:
        """One line for the model saying why the call failed, or None when it succeeded."""
        if self.ok:
            return None
        limits = self.limits
        reason = {
            "wall_time": f"stopped after the {limits.wall_time_s:g} s wall-time limit",
            "cpu_time": f"stopped after the {limits.cpu_time_s} s CPU-time limit",
            "memory": f"ran out of memory (limit {limits.memory_bytes >> 20} MiB)",
            "output": f"stopped: output exceeded {limits.output_bytes} bytes",
            "processes": f"hit the process limit ({limits.processes} processes)",
            None: _exit_reason(self.exit_status),
        }[self.limit]
        detail = _last_line(self.stderr)
        return f"python tool error: {reason}" + (f" ({detail})" if detail else "")

    def render(self) -> str:
        """The tool message the model reads: output, then the error line if any."""
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr.rstrip("\n"))
        error = self.tool_error
        if error:
            parts.append(error)
        return "\n".join(parts) if parts else "(no output)"


def _exit_reason(status: int | None) -> str:
    if status is not None and status > 128:
        try:
            return f"killed by signal {signal.Signals(status - 128).name}"
        except ValueError:
            pass
    return f"exited with status {status}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= ERROR_DETAIL_CHARS else line[: ERROR_DETAIL_CHARS - 3] + "..."


class PythonSandbox:
    """Runs code with one interpreter under fixed limits; construction fails if the sandbox cannot work."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        python: str = sys.executable,
        bwrap: str = "bwrap",
    ):
        self.limits = limits or SandboxLimits()
        self._as_root = os.geteuid() == 0
        self._bwrap = _require_tool(bwrap, "bubblewrap (bwrap)")
        self._setpriv = _require_tool("setpriv", "setpriv (util-linux)") if self._as_root else None
        self._prlimit = _require_tool("prlimit", "prlimit (util-linux)")
        self._python = python
        self._runtime = _runtime_dirs(python)
        self._self_check()

    def run(self, code: str) -> SandboxResult:
        run_id = uuid.uuid4().hex
        with tempfile.TemporaryDirectory(prefix="hle-sandbox-") as host_dir:
            script = Path(host_dir) / SCRIPT_NAME
            script.write_text(code, encoding="utf-8")
            script.chmod(0o444)
            return self._execute(self._command(script), run_id)

    # -- internals ---------------------------------------------------------------------------

    def _command(self, script: Path | None, argv: list[str] | None = None) -> list[str]:
        limits = self.limits
        cmd = [
            self._bwrap,
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            # multiprocessing's semaphores live in /dev/shm
            "--size",
            str(SHM_BYTES),
            "--perms",
            "1777",
            "--tmpfs",
            "/dev/shm",
        ]
        if not self._as_root:
            cmd += ["--unshare-user", "--disable-userns"]
        made: set[str] = {"/", "/usr"}
        for directory in self._runtime:
            for parent in reversed(Path(directory).parents):
                if str(parent) not in made:
                    # bubblewrap makes missing parents 0700 when run as root, which would hide
                    # the runtime from the unprivileged sandbox user.
                    cmd += ["--perms", "0555", "--dir", str(parent)]
                    made.add(str(parent))
            cmd += ["--ro-bind", directory, directory]
            made.add(directory)
        cmd += ["--size", str(limits.disk_bytes), "--perms", "1777", "--tmpfs", SANDBOX_DIR]
        if script is not None:
            cmd += ["--ro-bind", str(script), f"{SANDBOX_DIR}/{SCRIPT_NAME}"]
        cmd += ["--chdir", SANDBOX_DIR, "--clearenv"]
        for name, value in self._environment().items():
            cmd += ["--setenv", name, value]
        if self._as_root:
            cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
            cmd += [self._setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
            cmd += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        else:
            cmd += ["--"]
        cpu = limits.cpu_time_s
        cmd += [
            self._prlimit,
            f"--cpu={cpu}:{cpu + 1}",
            f"--as={limits.memory_bytes}",
            f"--nproc={limits.processes}",
            f"--fsize={limits.disk_bytes}",
            f"--nofile={limits.open_files}",
            "--core=0",
            "--",
        ]
        cmd += argv if argv is not None else [self._python, f"{SANDBOX_DIR}/{SCRIPT_NAME}"]
        return cmd

    @staticmethod
    def _environment() -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": SANDBOX_DIR,
            "TMPDIR": SANDBOX_DIR,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",  # output printed before a kill survives it
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
        }

    def _execute(self, cmd: list[str], run_id: str) -> SandboxResult:
        limits = self.limits
        cmd = _with_run_id(cmd, run_id)
        start = time.monotonic()
        deadline = start + limits.wall_time_s
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        buffers = {"stdout": bytearray(), "stderr": bytearray()}
        fired: Limit | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
            selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    fired = "wall_time"
                    break
                for key, _ in selector.select(timeout=remaining):
                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buffers[key.data] += chunk
                if sum(len(b) for b in buffers.values()) > limits.output_bytes:
                    fired = "output"
                    break
        if fired is not None:
            _kill_group(proc.pid)
        status = proc.wait()
        if status < 0:  # bwrap itself killed by a signal: report it shell-style, as bwrap does for its child
            status = 128 - status
        proc.stdout.close()
        proc.stderr.close()
        stdout, stderr = _clip(buffers, limits.output_bytes)
        if fired is None:
            fired = _limit_from_exit(status, stderr)
        elif fired == "wall_time" and _mentions(stderr, _PROCESS_MARKERS):
            fired = "processes"  # a fork bomb churns at the process limit until the clock stops it
        return SandboxResult(
            stdout=stdout,
            stderr=stderr,
            exit_status=None if fired in ("wall_time", "output") else status,
            limit=fired,
            duration_s=time.monotonic() - start,
            run_id=run_id,
            limits=limits,
        )

    def _self_check(self) -> None:
        """Starts one empty sandbox so a machine that cannot build namespaces fails here, in one line."""
        cmd = self._command(None, argv=[self._python, "-c", "pass"])
        try:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MissingDependencyError(
                f"python tool sandbox: bubblewrap self-check failed: {exc}"
            ) from None
        if done.returncode != 0:
            detail = _last_line(done.stderr.decode("utf-8", "replace")) or f"exit status {done.returncode}"
            raise MissingDependencyError(
                f"python tool sandbox: bubblewrap at {self._bwrap} cannot build the sandbox here ({detail}); "
                "it needs network, PID and mount namespaces"
            )


def _require_tool(name: str, what: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingDependencyError(f"python tool sandbox: {what} not found as {name!r}; {INSTALL_HINT}")
    return path


def _runtime_dirs(python: str) -> list[str]:
    """The interpreter's prefixes (a venv and its base), to be bound read-only inside."""
    probe = "import json, sys; print(json.dumps(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix})))"
    try:
        out = subprocess.run(
            [python, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"python tool sandbox: interpreter {python!r} does not run: {exc}") from None
    dirs = [d for d in json.loads(out.stdout) if d != "/usr" and not d.startswith("/usr/")]
    # A prefix nested in another is covered by the outer bind.
    return [d for d in dirs if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in dirs)]


def _with_run_id(cmd: list[str], run_id: str) -> list[str]:
    """Tags the sandbox's environment so a test can find any process that outlived it."""
    at = cmd.index("--clearenv") + 1
    return cmd[:at] + ["--setenv", RUN_ID_ENV, run_id] + cmd[at:]


def _kill_group(pid: int) -> None:
    # bwrap leads its own process group; its in-namespace init has die-with-parent, and the
    # kernel kills everything in a PID namespace when that init dies.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _clip(buffers: dict[str, bytearray], limit: int) -> tuple[str, str]:
    stdout = bytes(buffers["stdout"][:limit])
    stderr = bytes(buffers["stderr"][: max(0, limit - len(stdout))])
    return stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")


def _limit_from_exit(status: int, stderr: str) -> Limit | None:
    if status == 0:
        return None
    if status == 128 + signal.SIGXCPU:
        return "cpu_time"
    if _mentions(stderr, _PROCESS_MARKERS):
        return "processes"
    if _mentions(stderr, _MEMORY_MARKERS):
        return "memory"
    return None


def _mentions(stderr: str, markers: tuple[str, ...]) -> bool:
    tail = stderr[-4000:]
    return any(marker in tail for marker in markers)
