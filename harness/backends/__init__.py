"""Model backends: how a pool's models are called (simulated, or real providers through LiteLLM)."""

from __future__ import annotations

import functools

from harness.errors import ConfigError
from harness.pool import Pool
from harness.protocols import ModelBackend


def build_backends(pool: Pool, kind: str) -> dict[str, ModelBackend]:
    """One backend per pool model, in pool order."""
    backends: dict[str, ModelBackend] = {}
    for model in pool.spec.models:
        if kind == "simulated":
            from harness.backends.simulated import SimulatedBackend

            if model.simulated is None:
                raise ConfigError(f"pool {pool.name!r}: model {model.name!r} has no 'simulated' profile")
            backends[model.name] = SimulatedBackend(model.card, model.simulated)
        elif kind == "litellm":
            from harness.backends.litellm_backend import LiteLLMBackend

            api_base, ensure_up = model.api_base, None
            if model.local is not None:
                from harness.local.servers import ensure_server

                api_base = ensure_server(model.name, model.local)
                ensure_up = functools.partial(ensure_server, model.name, model.local)
            backends[model.name] = LiteLLMBackend(
                model.card,
                api_base=api_base,
                api_key_env=model.api_key_env,
                keyless=model.local is not None,
                tool_calls=model.tool_calls,
                max_tokens=model.local.max_tokens if model.local is not None else None,
                schema_style="json_object" if model.local is not None else "json_schema",
                ensure_up=ensure_up,
            )
        else:
            raise ConfigError(f"unknown backend kind {kind!r} (simulated, litellm)")
    return backends
