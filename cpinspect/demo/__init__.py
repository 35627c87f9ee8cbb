"""The bundled demo: a small CherryPy shop and a load generator that stages an incident.

``python -m cpinspect.demo.app`` runs the shop (inside it, the code the inspector looks at),
``python -m cpinspect.demo.load`` stages a thread-starvation incident against it and
``cpinspect.demo.runner.DemoProcesses`` runs both as children of ``cpinspect demo``.

The app side (``app``, ``shop``, ``db``, ``_lifeline``) runs inside the target, so it needs only
the standard library, cherrypy and the agent, and keeps Python 3.8 syntax.
"""
