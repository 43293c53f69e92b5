"""Routers evaluated against logged trajectories.

``logged``: the in-memory form of a logged episode; ``importers``: our run directories,
the reference's trajectories and a generic JSONL into the current run-directory format, with a
report per file; ``redact``: credentials stripped on import; ``ope``: off-policy estimates
of a router's score and cost with bootstrap intervals and effective sample sizes;
``decisions``: what a router picks at each logged state; ``policies``: a router's
probabilities and values at every logged state; ``evaluate``: one router offline on logged
run directories (``harness replay``); ``agreement``: offline estimates beside live results
(``harness replay-agreement``); ``benchmark``: a definition that names logs instead of a
pool (``harness replay-benchmark``); ``prefix_cache``: an environment wrapper that serves
repeated action prefixes from memory. ``harness import`` runs an import.
"""
