"""The cpinspect agent: runs inside the CherryPy process and serves /v1 over a private socket.

Standard library, cherrypy/cheroot and its own modules only (DESIGN.md invariant 5); Python 3.8
syntax.

Importing this package has no side effect of its own: the inspector imports the agent's pure
modules (``wire``, ``paths``, ``redact``, ...) through it without loading CherryPy. The
``inspector`` config namespace (and the agent's ``atexit`` hook) come with ``plugin``, which is
imported

- by ``import cpinspect.agent`` when CherryPy is already imported, so import ``cherrypy`` first::

      import cherrypy
      import cpinspect.agent                             # registers the `inspector` namespace
      cherrypy.config.update({"inspector.on": True})

- or by ``import cpinspect.agent.plugin``, whatever the order;
- or by the first use of ``cpinspect.agent.install()`` / ``installed()`` / ``uninstall()``
  (loaded lazily), which installs the agent directly.
"""

import sys
from typing import TYPE_CHECKING, Any, List

if TYPE_CHECKING:
    from .plugin import install, installed, uninstall

__all__ = ["install", "installed", "uninstall"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import plugin

        return getattr(plugin, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


if "cherrypy" in sys.modules:
    # The app imported CherryPy first: register ``inspector.*`` now, so that a config applied
    # after this import can say ``inspector.on = True``. The inspector never imports cherrypy.
    from . import plugin  # noqa: F401
