"""The cpinspect agent: runs inside the CherryPy process and serves /v1 over a private socket.

Standard library, cherrypy/cheroot and its own modules only (DESIGN.md invariant 5); Python 3.8
syntax. Importing it registers the ``inspector`` config namespace, so ``inspector.on = True``
works in any config applied afterwards::

    import cpinspect.agent
    cherrypy.config.update({"inspector.on": True})   # or cpinspect.agent.install()
"""

from .plugin import install, installed, uninstall

__all__ = ["install", "installed", "uninstall"]
