"""The HLE ``python`` tool: model-written code in a bubblewrap sandbox, never on the host.

The reference implementation runs such code unsandboxed when no sandbox endpoint is
configured; here there is no unsandboxed path. Each call gets:

- an environment of its own: bubblewrap is started with an empty environment (its
  in-namespace init, PID 1 inside, is a copy of it, and ``/proc/1/environ`` is readable
  to the program when the harness runs as a non-root user), and the program gets
  ``--clearenv`` plus the allow-list of :meth:`PythonSandbox._environment`; nothing of the
  harness's environment (API keys included) exists inside;
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
- memory and process limits: where the harness may create cgroups (root on a cgroup v1
  host with the memory and pids hierarchies), a cgroup per call bounds the
  sandbox as a whole (its tmpfs included); elsewhere (not root, cgroup v2) ``prlimit``
  sets per-process rlimits (address space, process count), so the sandbox can hold at
  most ``processes x memory_bytes`` of address space (8 GiB with the defaults);
- rlimits set by ``prlimit`` inside the sandbox: CPU seconds, file size and open files;
- wall time and output size enforced here, by the reader of its pipes, which kills the
  whole sandbox (its PID namespace dies with it) the moment either is exceeded.

Which limit fired is what this side observed, never what the program printed: wall time
and output when this side had to kill a sandbox that was still running, CPU time when the
kernel's SIGXCPU ended it, memory and
processes only from the cgroup's counters (an OOM kill, a refused fork). Without a cgroup
a program that runs out of memory or processes ends with its own error (``MemoryError``,
``Resource temporarily unavailable``), which the tool message shows as its last line.

Debian packages: ``bubblewrap`` (bwrap) and ``util-linux`` (setpriv, prlimit);
``.ci/install-sandbox.sh`` installs them.
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
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
EXIT_GRACE_S = 1.0  # a program that ended right at the wall limit gets this long to be reaped
CGROUP_MOUNT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "pids")  # cgroup v1 hierarchies, one directory each
BWRAP_PROCESSES = 2  # bubblewrap itself and its in-namespace init, both in the call's cgroup
CGROUP_REMOVE_TRIES = 100


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
        self._cgroup_parents = _cgroup_parents()
        self._self_check()

    @property
    def uses_cgroup(self) -> bool:
        """Whether each call's memory and processes are bounded (and observed) by a cgroup of its own."""
        return self._cgroup_parents is not None

    def run(self, code: str) -> SandboxResult:
        run_id = uuid.uuid4().hex
        with tempfile.TemporaryDirectory(prefix="hle-sandbox-") as host_dir:
            script = Path(host_dir) / SCRIPT_NAME
            script.write_text(code, encoding="utf-8")
            script.chmod(0o444)
            if self._cgroup_parents is None:
                return self._execute(self._command(script), run_id, None)
            cgroup = _Cgroup.create(self._cgroup_parents, f"hle-sandbox-{run_id}", self.limits)
            try:
                return self._execute(cgroup.enter(self._command(script)), run_id, cgroup)
            finally:
                cgroup.remove()

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
        cmd += [self._prlimit, f"--cpu={cpu}:{cpu + 1}"]
        # With a cgroup, the call's cgroup bounds memory and processes for the sandbox as a whole.
        if self._cgroup_parents is None:
            cmd += [f"--as={limits.memory_bytes}", f"--nproc={limits.processes}"]
        cmd += [f"--fsize={limits.disk_bytes}", f"--nofile={limits.open_files}", "--core=0", "--"]
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

    def _execute(self, cmd: list[str], run_id: str, cgroup: _Cgroup | None) -> SandboxResult:
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
            env={},  # bubblewrap's init (PID 1 inside) keeps this environment, readable from inside
        )
        buffers = {"stdout": bytearray(), "stderr": bytearray()}
        fired: Limit | None = None
        graced = False
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
            selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if proc.poll() is None:
                        fired = "wall_time"
                        break
                    if graced:
                        break
                    graced = True  # it has ended: read what it wrote, then stop regardless
                    deadline += EXIT_GRACE_S
                    continue
                for key, _ in selector.select(timeout=remaining):
                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buffers[key.data] += chunk
                if sum(len(b) for b in buffers.values()) > limits.output_bytes:
                    fired = "output"
                    break
        if fired is None:  # its outputs are closed, but a program can run on without them
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                fired = "wall_time"
        if fired is not None or graced:  # graced: something still held its outputs after it ended
            _kill_group(proc.pid)
        status = proc.wait()
        if fired == "wall_time" and status != -signal.SIGKILL:
            fired = None  # it finished on its own before the kill landed: nothing was stopped
        if status < 0:  # bwrap itself killed by a signal: report it shell-style, as bwrap does for its child
            status = 128 - status
        proc.stdout.close()
        proc.stderr.close()
        stdout, stderr = _clip(buffers, limits.output_bytes)
        if fired != "output":
            fired = _observed_limit(status, cgroup) or fired
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
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env={})
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


def _observed_limit(status: int, cgroup: _Cgroup | None) -> Limit | None:
    """The limit the kernel enforced on a failed call, from its counters and signals; None when none did."""
    if status == 0:
        return None
    if cgroup is not None:
        if cgroup.oom_kills() > 0:
            return "memory"
        if cgroup.refused_forks() > 0:
            return "processes"
    if status == 128 + signal.SIGXCPU:  # the kernel's signal at RLIMIT_CPU
        return "cpu_time"
    return None


def _cgroup_parents() -> dict[str, Path] | None:
    """This process's cgroup v1 directories for memory and pids, if it may make children there.

    None on cgroup v2, without the controllers, or without write access (not root): the
    sandbox then falls back to per-process rlimits.
    """
    try:
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                own[controller] = path
        parents = {c: CGROUP_MOUNT / c / own[c].lstrip("/") for c in CGROUP_CONTROLLERS}
        if "oom_kill " not in (parents["memory"] / "memory.oom_control").read_text():
            return None  # a kernel before 4.13 does not count OOM kills
    except (OSError, KeyError, ValueError):
        return None
    if not all(os.access(parent, os.W_OK) for parent in parents.values()):
        return None
    probe = f"hle-sandbox-probe-{uuid.uuid4().hex}"
    try:
        _Cgroup.create(parents, probe, SandboxLimits()).remove()
    except OSError:
        return None
    return parents


@dataclass(frozen=True)
class _Cgroup:
    """One call's cgroup (a directory per v1 hierarchy): its bounds and the counters that say what fired."""

    dirs: dict[str, Path]

    @classmethod
    def create(cls, parents: dict[str, Path], name: str, limits: SandboxLimits) -> _Cgroup:
        made = cls({c: parent / name for c, parent in parents.items()})
        created = []
        try:
            for directory in made.dirs.values():
                directory.mkdir()
                created.append(directory)
            memory = made.dirs["memory"]
            (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            swap = memory / "memory.memsw.limit_in_bytes"
            if swap.exists():  # memory + swap: no swapping past the limit
                swap.write_text(str(limits.memory_bytes))
            (made.dirs["pids"] / "pids.max").write_text(str(limits.processes + BWRAP_PROCESSES))
        except OSError:
            for directory in created:
                directory.rmdir()
            raise
        return made

    def enter(self, cmd: list[str]) -> list[str]:
        """``cmd`` run by a shell that first moves itself into this cgroup, so nothing starts outside it."""
        moves = " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs.values())
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "sh", *cmd]

    def oom_kills(self) -> int:
        return _counter(self.dirs["memory"] / "memory.oom_control", "oom_kill")

    def refused_forks(self) -> int:
        return _counter(self.dirs["pids"] / "pids.events", "max")

    def remove(self) -> None:
        # The PID namespace's processes are killed with its init, but the kernel reaps them
        # asynchronously; the directory can be removed once the last one is gone.
        for directory in self.dirs.values():
            for _ in range(CGROUP_REMOVE_TRIES):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _counter(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0
