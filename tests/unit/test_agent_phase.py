"""The agent's phase from a worker's stack (innermost first), on the signatures CherryPy 18.10 /
cheroot 11 show: the frames are written by hand in the shape ``probes.threads`` extracts."""

from __future__ import annotations

from typing import Any, Dict, List

from cpinspect.agent.probes.threads import phase_from_stack

CP = "/venv/lib/python3.11/site-packages/cherrypy/"
CHEROOT = "/venv/lib/python3.11/site-packages/cheroot/"


def frames(*spec: str) -> List[Dict[str, Any]]:
    out = []
    for item in spec:
        filename, function = item.split(":")
        out.append({"file": filename, "function": function, "app": filename.startswith("/srv")})
    return out


def test_a_worker_waiting_for_its_session_lock_is_not_writing() -> None:
    # GIVEN a worker blocked in the sessions tool before the handler (no app frame on the way
    # out to cheroot's Gateway.respond, which also writes the body later)
    stack = frames(
        CP + "lib/sessions.py:acquire_lock",
        CP + "_cptools.py:_lock_session",
        CP + "_cprequest.py:__call__",
        CP + "_cprequest.py:run_hooks",
        CP + "_cprequest.py:respond",
        CP + "_cpwsgi.py:run",
        CHEROOT + "wsgi.py:respond",
        CHEROOT + "server.py:communicate",
    )
    # THEN the stack says nothing (the request's stage decides: the handler phase), not writing
    assert phase_from_stack(stack) is None


def test_the_body_being_written_is_writing() -> None:
    # GIVEN cheroot writing a chunk, and cheroot iterating the body the app returned
    writing = frames(CHEROOT + "wsgi.py:write", CHEROOT + "wsgi.py:respond")
    iterating = frames(
        CP + "_cpwsgi.py:__next__", CHEROOT + "wsgi.py:respond", CHEROOT + "server.py:x"
    )
    # THEN both are the writing phase
    assert phase_from_stack(writing) == "writing"
    assert phase_from_stack(iterating) == "writing"


def test_reading_the_body_is_reading() -> None:
    stack = frames(CP + "_cpreqbody.py:read", CP + "_cprequest.py:respond")
    assert phase_from_stack(stack) == "reading"
