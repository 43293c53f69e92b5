"""``python -m harness.replay import {run,reference,jsonl} SOURCE DEST``: import logs, print the report's summary.

The report is also stored as ``DEST/import-report.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.replay.importers import IMPORTERS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.replay")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("import", help="import logged episodes into a new run directory")
    command.add_argument("kind", choices=sorted(IMPORTERS))
    command.add_argument("source", type=Path)
    command.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        report = IMPORTERS[args.kind](args.source, args.dest)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
