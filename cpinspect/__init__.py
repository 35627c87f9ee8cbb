"""cpinspect: a live terminal inspector for running CherryPy servers."""

__version__ = "0.1.0"
"""Kept equal to ``cpinspect.agent.wire.AGENT_VERSION`` (a test checks it)."""

__all__ = ["__version__"]
