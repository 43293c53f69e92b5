"""The fault-injection soak, short: one cycle of a batch and a tiny benchmark under every kind of fault.

``benchmarks/fault_injection.py`` kills the harness process, a worker, a JVM, the tuning process
mid-trial and the ``mlflow server``, and tears files a killed writer left, then resumes until done;
it checks every episode exactly once with the undisturbed results, every dollar accounted, the report
byte-identical and every fault's output one line without a traceback. The long soak runs it for
half an hour; here one cycle with a smaller batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_one_soak_cycle_loses_nothing_counts_nothing_twice_and_every_fault_is_one_line(tmp_path: Path):
    argv = [sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--cycles", "1", "--seed", "0"]
    argv += ["--work", str(tmp_path), "--tasks", "find", "--faults-per-command", "6"]
    environment = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    }
    done = subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["ok"] and summary["resumes"] > 0
    # Each kind of fault of the soak was injected (tears follow some of the process kills).
    assert {"parent", "worker", "jvm", "tuner", "mlflow"} <= set(summary["faults"]), done.stdout
