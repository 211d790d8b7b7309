"""Benchmarks of interview-agent against Vision-Agents' own Runner: `uv run python -m bench [--quick]`."""
