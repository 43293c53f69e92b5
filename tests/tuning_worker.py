"""One tuning worker process, for tests that run several on one shared study or kill one mid-trial.

``python tuning_worker.py STORAGE STUDY N_TRIALS WORKER SECONDS [HANG_MARKER [HANG_AT]]``
tunes with a cheap analytic objective that sleeps ``SECONDS`` per trial. With
``HANG_MARKER`` the worker's evaluation number ``HANG_AT`` (0, the first, by default)
writes the trial's params there and then hangs, so a test can kill or interrupt the
worker while that trial runs. Ctrl-C ends it as the CLI does: one line, exit code 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from harness.tuning import Heartbeat, tune

# The shortest beat Optuna accepts (whole seconds), so a killed worker's trial is stale within seconds.
TEST_HEARTBEAT = Heartbeat(interval_s=1, grace_s=2, max_retry=2)
EXIT_INTERRUPTED = 130


def main(
    storage: str,
    study: str,
    n_trials: str,
    worker: str,
    seconds: str,
    hang_marker: str = "",
    hang_at: str = "0",
) -> None:
    evaluations = 0

    def evaluate(params: dict) -> tuple[float, float]:
        nonlocal evaluations
        evaluations += 1
        if hang_marker and evaluations == int(hang_at) + 1:
            # Let the trial's first heartbeat land before announcing it, so the kill does not cut a write.
            time.sleep(0.3)
            Path(hang_marker).write_text(json.dumps({"pid": os.getpid(), "params": params}))
            time.sleep(3600)
        time.sleep(float(seconds))
        return 100.0 - 10.0 * params["lam"], 1.0 / (1.0 + params["lam"])

    tune(
        "toy",
        evaluate,
        None,
        study,
        int(n_trials),
        storage=storage,
        worker=int(worker),
        heartbeat=TEST_HEARTBEAT,
    )


if __name__ == "__main__":
    # Stand for a terminal's job even when the suite runs in the background, whose children inherit
    # SIGINT ignored (and then Python installs no KeyboardInterrupt for it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main(*sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
