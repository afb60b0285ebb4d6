"""An OpenAI-compatible upstream **simulator** for tests, demos and
benchmarks. It is not a model: it answers chat completions with a
deterministic text after a configurable latency, reports configurable token
usage, injects failures on demand, and counts what it received.

Run it with ``aimesh sim --port 8101`` (or ``python -m aimesh.sim``).
"""

from aimesh.sim.app import SimConfig, SimulatorApp, add_arguments, main, run, serve

__all__ = ["SimConfig", "SimulatorApp", "add_arguments", "main", "run", "serve"]
