"""Routers evaluated against logged trajectories: import, off-policy estimates, prefix cache."""
