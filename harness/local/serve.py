"""``python -m harness.local.serve <llama_cpp.server options>``: llama.cpp's server, tied to its parent.

The server exits as soon as its stdin reaches end of file. The harness that starts it
keeps the pipe's other end open and never hands it to another process, so when the
harness dies, whatever kills it, the kernel closes the pipe and the server follows:
no orphan server holds a port and a gigabyte of memory after a crashed run.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading


def _exit_at_end_of_stdin() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def main() -> None:
    threading.Thread(target=_exit_at_end_of_stdin, daemon=True).start()
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
