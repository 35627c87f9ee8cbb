"""Where data comes from: the live agent, py-spy, a saved file. One interface, one model."""

DEFAULT_TIMEOUT = 1.0
"""Seconds to wait for the agent per request. About a second: past that the interpreter may be
stuck (DESIGN.md, py-spy fallback). Here, not in ``sources.agent``, so that the command line can
show it in ``--help`` without importing the HTTP client."""
