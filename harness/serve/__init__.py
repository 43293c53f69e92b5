"""``harness serve``: a router behind an OpenAI-compatible endpoint, every routed turn logged for replay.

A client (the OpenAI SDK, LiteLLM, an agent framework, the harness's own agent loop) sends chat
requests as it would to a provider; the router picks a pool model for each turn from the same
:class:`~harness.types.TurnState` it sees in ``harness run``, the model answers, and the turn is
written to a run directory in the trajectory format, with the propensity off-policy evaluation
needs. ``harness replay`` and ``harness train`` read that directory like any other, which closes
the loop: benchmark, serve, log, replay, retrain.

:mod:`harness.serve.app` is the HTTP side, :mod:`harness.serve.sessions` which conversation a
request continues, :mod:`harness.serve.upstream` the call to the chosen model, and
:mod:`harness.serve.records` the records written.
"""

from harness.serve.app import RouterServer, ServeConfig, serve

__all__ = ["RouterServer", "ServeConfig", "serve"]
