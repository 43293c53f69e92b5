"""Real servers for the tests: a PostgreSQL server, a database per test, an ``mlflow server``.

PostgreSQL comes from ``HARNESS_TEST_POSTGRES_URL`` when set (``.ci/services.sh``
starts one and prints it), else from a private server started here on a free
loopback port from the installed binaries and discarded at the end of the session.
Without binaries the tests that need them skip, naming the install step; under CI
(``CI`` set, as ``.ci/run`` sets it) they fail instead, since a skipped scale test would pass CI silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_URL_ENV = "HARNESS_TEST_POSTGRES_URL"
SERVER_ROLE = "harness"
INSTALL_HINT = "run `bash .ci/services.sh` (installs the postgresql system package)"
STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this does not skip)", pytrace=False)
    pytest.skip(reason)


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest Debian server package's directory."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    return candidates[-1].parent if candidates else None


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: hand its commands to the package's ``postgres`` account."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@dataclass(frozen=True)
class PostgresServer:
    """A server reachable at ``admin_url`` by a role that may create databases."""

    admin_url: str

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10, **kwargs)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL (driver-neutral ``postgresql://``)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def private_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    """A throw-away server: its data in a temp dir, trust auth on 127.0.0.1 only, no fsync (tests only)."""
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    port = free_port()
    try:
        subprocess.run(
            _as_server_user(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", SERVER_ROLE, "--auth=trust", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
        started = subprocess.run(
            _as_server_user(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}: {tail}")
        yield PostgresServer(f"postgresql://{SERVER_ROLE}@127.0.0.1:{port}/postgres")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (see the module docstring for where it comes from)."""
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        unavailable("the psycopg driver is not installed: pip install 'psycopg[binary]'")
    if url := os.environ.get(POSTGRES_URL_ENV):
        server = PostgresServer(url)
        try:
            server.connect().close()
        except Exception as exc:
            pytest.fail(f"{POSTGRES_URL_ENV} names a server that does not answer: {exc}", pytrace=False)
        yield server
        return
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        unavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_HINT}")
    with private_postgres(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class MlflowServer:
    url: str
    backend_store_uri: str
    artifacts: Path


@contextlib.contextmanager
def running_mlflow_server(backend_store_uri: str, artifacts: Path, log: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free loopback port, proxying artifacts to a local directory."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", backend_store_uri),
        *("--artifacts-destination", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {url}: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield MlflowServer(url, backend_store_uri, artifacts)
    finally:
        # The server runs worker processes of its own: end its whole process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@pytest.fixture(scope="session")
def mlflow_server(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory):
    """An ``mlflow server`` with a PostgreSQL backend store, shared by the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    database = postgres_server.create_database("mlflow")
    backend = database.replace("postgresql://", "postgresql+psycopg://", 1)
    with running_mlflow_server(backend, root / "artifacts", root / "server.log") as server:
        yield server
    postgres_server.drop_database(database)
