"""llama.cpp servers for a pool's local models: started by the harness, health-checked, reused, stopped.

Each local model gets its own ``llama_cpp.server`` on 127.0.0.1 at the port its pool
file names. The server runs under :mod:`harness.local.serve`, which exits the moment its
stdin reaches end of file; the harness holds the other end of that pipe, so the server
goes when the harness process goes, by any death, ``kill -9`` included. A record per
port (``<cache>/servers/<port>.json``) names the server's process and its owner; a
later start reuses a live server of the same weights (another process of the same
run, or the next batch) and kills one whose owner is gone. A port held by anything
else is a one-line error.

The settings come from measurements on a 2-core machine under load: ``logits_all``
off (on, the server keeps a context x vocabulary float array: 15 GB at 12k tokens),
one generation thread (two collapsed to about 1 token/s when the cores were busy)
and two for prompt processing.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, ProviderError
from harness.local.weights import LocalWeights, cache_root, ensure_weights
from harness.procfs import alive
from harness.trajectory import write_json_atomic

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0  # loading 1 GB of weights on a busy 2-core machine
PORT_GRACE_S = 5.0  # a server that just exited may accept connections for a moment longer
INSTALL_HINT = "make real-setup (or pip install -e '.[local]')"


@dataclass(frozen=True)
class LocalServer:
    """A pool model served on this machine: its weights and its llama.cpp server settings.

    ``chat_format`` None uses the chat template in the GGUF file itself (llama.cpp's
    Jinja renderer, which does not HTML-escape; ``chatml-function-calling`` does).
    """

    weights: LocalWeights
    port: int
    n_ctx: int = 8192
    chat_format: str | None = None
    n_threads: int = 1
    n_threads_batch: int = 2
    max_tokens: int = 256  # per reply: a small model that rambles would otherwise run to the context's end

    @property
    def api_base(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


@dataclass
class _Running:
    process: subprocess.Popen | None  # None: started by another process, reused here
    pid: int
    port: int


_running: dict[int, _Running] = {}
_lock = threading.Lock()


def servers_dir() -> Path:
    path = cache_root() / "servers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_server(model: str, server: LocalServer) -> str:
    """The model's server's API base, starting the server unless a live one of the same weights is up.

    A server known to be up is trusted while its process lives (a health request would wait behind
    whatever the server is generating for another worker); only a new or adopted one is health-checked.
    """
    with _lock:
        running = _running.get(server.port)
        if running is not None and alive(running.pid):
            return server.api_base
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(
                f"model {model!r} is served by llama.cpp, which is not installed: {INSTALL_HINT}"
            )
        weights = ensure_weights(server.weights, model)
        record = _read_record(server.port)
        if record is not None:
            if record["file"] == str(weights) and alive(record["pid"]) and alive(record["owner"]):
                _wait_healthy(model, server.port, record["pid"], None)  # another process's: it may be loading
                _running[server.port] = _Running(None, record["pid"], server.port)
                return server.api_base
            _reap(record)
        if not _freed(server.port, PORT_GRACE_S):
            raise ConfigError(
                f"model {model!r}: port {server.port} on {HOST} is already taken by another program"
            )
        _running[server.port] = _start(model, server, weights)
        return server.api_base


def _start(model: str, server: LocalServer, weights: Path) -> _Running:
    command = [
        sys.executable, "-m", "harness.local.serve",
        "--model", str(weights), "--model_alias", model,
        "--host", HOST, "--port", str(server.port),
        "--n_ctx", str(server.n_ctx), "--logits_all", "False",
        "--n_threads", str(server.n_threads), "--n_threads_batch", str(server.n_threads_batch),
    ]  # fmt: skip
    if server.chat_format is not None:
        command += ["--chat_format", server.chat_format]
    log_path = servers_dir() / f"{server.port}.log"
    with open(log_path, "ab") as log_file:  # appended: the log of a server that died is kept
        log_file.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {model} (harness pid {os.getpid()})\n".encode()
        )
        log_file.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal is the harness's to handle, not the server's
            env=os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
    write_json_atomic(
        _record_path(server.port),
        {"pid": process.pid, "owner": os.getpid(), "file": str(weights), "model": model},
    )
    started = time.monotonic()
    while not healthy(server.port, model):
        if process.poll() is not None:
            _remove_record(server.port)
            raise ProviderError(
                f"model {model!r}: its llama.cpp server exited at start ({_last_line(log_path)})"
            )
        if time.monotonic() - started > START_TIMEOUT_S:
            _stop(process)
            _remove_record(server.port)
            raise ProviderError(
                f"model {model!r}: its llama.cpp server did not come up in {START_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.5)
    log.info("model %r served on port %d (pid %d) in %.1f s", model, server.port, process.pid,
             time.monotonic() - started)  # fmt: skip
    return _Running(process, process.pid, server.port)


def _wait_healthy(model: str, port: int, pid: int, log_path: Path | None) -> None:
    started = time.monotonic()
    while not healthy(port, model):
        if not alive(pid):
            why = f" ({_last_line(log_path)})" if log_path is not None else ""
            raise ProviderError(f"model {model!r}: its llama.cpp server exited at start{why}")
        if time.monotonic() - started > START_TIMEOUT_S:
            raise ProviderError(
                f"model {model!r}: its llama.cpp server did not come up in {START_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.5)


def healthy(port: int, model: str) -> bool:
    """Whether a server on ``port`` answers ``/v1/models`` and serves ``model``."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v1/models", timeout=2) as response:
            listed = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return any(entry.get("id") == model for entry in listed.get("data", []))


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port``: a connection is refused. (A bind probe is not used: sockets of a
    server stopped a moment ago linger in TIME_WAIT or FIN_WAIT2 and fail it, though the server can bind.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        return probe.connect_ex((HOST, port)) != 0


def _freed(port: int, grace_s: float) -> bool:
    deadline = time.monotonic() + grace_s
    while not port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def stop_all() -> None:
    """Stop the servers this process started (reused ones belong to their owner)."""
    with _lock:
        for port, running in list(_running.items()):
            if running.process is not None:
                _stop(running.process)
                _remove_record(port)
            del _running[port]


def stop_server(port: int) -> None:
    """Stop this process's server on ``port`` (the next :func:`ensure_server` starts a fresh one)."""
    with _lock:
        running = _running.pop(port, None)
        if running is not None and running.process is not None:
            _stop(running.process)
            _remove_record(port)


def server_pid(port: int) -> int | None:
    running = _running.get(port)
    return running.pid if running is not None else None


atexit.register(stop_all)


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        process.stdin.close()  # the server's cue to exit
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _reap(record: dict) -> None:
    """Kill a recorded server whose owner is gone (or whose weights changed), if it is still ours."""
    pid = record["pid"]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    if b"harness.local.serve" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.05)
    _remove_record(int(record["port"]))


def _record_path(port: int) -> Path:
    return servers_dir() / f"{port}.json"


def _read_record(port: int) -> dict | None:
    try:
        return json.loads(_record_path(port).read_text()) | {"port": port}
    except (OSError, ValueError):
        return None


def _remove_record(port: int) -> None:
    _record_path(port).unlink(missing_ok=True)


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return "no output"
