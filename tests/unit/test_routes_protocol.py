"""Readers and renderers of /v1/routes and /v1/resolve, on hand-built payloads."""

from __future__ import annotations

import pytest

from cpinspect.cli import resolve as resolve_cli
from cpinspect.cli import routes as routes_cli
from cpinspect.protocol import ProtocolError, resolution_from_json, routes_from_json

EXPOSED_DISPATCH = "_cp_dispatch is exposed: CherryPy will not call it"


def test_routes_reader_is_tolerant():
    # GIVEN a payload with unknown keys, missing ones and junk entries
    payload = {
        "schema": 1,
        "apps": [
            {
                "script_name": "",
                "dispatcher": "default",
                "future": 1,
                "nodes": [
                    {"path": "/x", "kind": "unexposed", "warnings": [EXPOSED_DISPATCH]},
                    "junk",
                ],
                "static": [{"path": "/s", "kind": "staticdir", "content_types": {"PNG": "a/b"}}],
            },
            7,
        ],
    }
    # WHEN read
    snap = routes_from_json(payload)
    # THEN the known parts come through with defaults
    (app,) = snap.apps
    assert app.nodes[0].warnings == (EXPOSED_DISPATCH,) and app.nodes[0].exposed is False
    assert app.static[0].content_types == (("PNG", "a/b"),)
    assert EXPOSED_DISPATCH in routes_cli.render(snap)
    with pytest.raises(ProtocolError):
        routes_from_json({"schema": 1})


def test_resolution_reader_and_render():
    payload = {
        "path": "/a/7",
        "method": "GET",
        "host": "h",
        "steps": ["root.a found, exposed ✓"],
        "verdict": {
            "kind": "handler",
            "status": 200,
            "reason": "the handler would be called",
            "handler": {"qualname": "m.A.show", "file": "m.py", "line": 3, "args": ["'7'"]},
        },
    }
    res = resolution_from_json(payload)
    assert (res.status, res.handler, res.args, res.lineno) == (200, "m.A.show", ("'7'",), 3)
    text = resolve_cli.render(res)
    assert "m.A.show m.py:3" in text and "root.a found" in text
    with pytest.raises(ProtocolError):
        resolution_from_json({"path": "/"})


def test_config_layers_and_tools_are_read():
    payload = {
        "apps": [
            {
                "script_name": "",
                "nodes": [{"path": "/a", "config": {"tools.gzip.on": "True", "k": "'***'"}}],
                "config": [
                    {"path": "/", "settings": {"tools.sessions.on": "True"}, "tools": ["x"]},
                    {"path": "/api", "settings": {}, "dispatcher": "MethodDispatcher"},
                    "junk",
                ],
            }
        ],
        "global_tools": ["encode"],
    }
    snap = routes_from_json(payload)
    (app,) = snap.apps
    assert app.nodes[0].config == (("k", "'***'"), ("tools.gzip.on", "True"))
    assert [(c.path, c.settings, c.dispatcher) for c in app.config] == [
        ("/", (("tools.sessions.on", "True"),), None),
        ("/api", (), "MethodDispatcher"),
    ]
    assert snap.global_tools == ("encode",)
    res = resolution_from_json(
        {"path": "/a", "verdict": {"kind": "handler", "tools": ["gzip", "sessions"]}}
    )
    assert res.tools == ("gzip", "sessions")
