"""One python-tool call from a harness process of its own, for tests that run the sandbox as another user.

``python sandbox_as_user.py`` reads ``{"code": ..., "limits": {...}}`` as JSON on stdin, runs the
code in :class:`PythonSandbox` with those limits and prints the result as one JSON object, with
the environment variables this process holds (so a test can show what it planted was there).
It imports only the sandbox module, which a test copies with :mod:`harness.errors` into a
directory the other user can read (the checkout and the venv may live under a private home).
"""

from __future__ import annotations

import json
import os
import sys

from harness.benchmarks.hle.sandbox import PythonSandbox, SandboxLimits


def main() -> None:
    request = json.load(sys.stdin)
    sandbox = PythonSandbox(SandboxLimits(**request["limits"]))
    result = sandbox.run(request["code"])
    json.dump(
        {
            "euid": os.geteuid(),
            "harness_environment": dict(os.environ),
            "uses_cgroup": sandbox.uses_cgroup,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_status": result.exit_status,
            "limit": result.limit,
            "tool_error": result.tool_error,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
