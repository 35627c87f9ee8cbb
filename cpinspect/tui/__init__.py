"""The Textual inspector: ``InspectorApp`` in ``cpinspect.tui.app``.

This package's ``__init__`` imports nothing, so pure helpers such as ``cpinspect.tui.state`` load
without Textual.
"""
