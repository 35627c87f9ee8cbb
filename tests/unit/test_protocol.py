"""JSON from a real agent (captured in tests/fixtures) into the model, tolerantly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpinspect.model import Phase, Role, Snapshot, SourceKind
from cpinspect.protocol import (
    FILE_KIND,
    FILE_SCHEMA,
    ProtocolError,
    info_from_json,
    schema_warning,
    snapshots_document,
    snapshots_from_document,
    threads_from_json,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def test_threads_fixture_parses_into_the_model():
    snap = threads_from_json(load("agent_threads_v1.json"))
    assert snap.pools[0].size == 3 and snap.pools[0].busy == 3
    busy = [t for t in snap.threads if t.busy]
    assert len(busy) == 3
    for t in busy:
        assert t.role is Role.WORKER and t.phase is Phase.HANDLER
        assert t.request is not None and t.request.path == "/block"
        assert t.request.query.endswith("token=***")
        assert t.top_app_frame is not None and t.top_app_frame.function == "block"
        assert t.stack[0].filename.endswith("threading.py")  # innermost first
    roles = {t.role for t in snap.threads}
    assert {Role.WORKER, Role.ACCEPTOR, Role.AGENT, Role.MAIN} <= roles


def test_info_fixture_parses_into_the_model():
    info = info_from_json(load("agent_info_v1.json"))
    assert info.engine_state == "STARTED"
    assert info.ports and info.servers[0].pool_size == 3
    assert info.apps[0].root == "__main__.Root"


def test_unknown_keys_are_ignored_and_missing_ones_defaulted():
    payload = {
        "schema": 1,
        "agent": "9.9",
        "threads": [{"ident": 5, "future": {"x": 1}}],
        "new_top_level": True,
    }
    snap = threads_from_json(payload)
    t = snap.threads[0]
    assert t.ident == 5 and t.role is Role.OTHER and t.phase is Phase.UNKNOWN and t.stack == ()


def test_wrong_types_degrade_to_defaults():
    payload = {
        "threads": [
            {"ident": "x", "busy": "yes", "role": "wizard", "stack": ["bad", {}], "elapsed": "long"}
        ],
        "pools": ["bad"],
    }
    t = threads_from_json(payload).threads[0]
    assert t.ident == 0 and t.role is Role.OTHER and t.elapsed is None
    assert len(t.stack) == 1 and t.stack[0].function == "?"


@pytest.mark.parametrize("payload", [[], "x", {"no": "threads"}, {"error": {"message": "boom"}}])
def test_payloads_no_agent_would_send_raise(payload):
    with pytest.raises(ProtocolError):
        threads_from_json(payload)


def test_schema_warning():
    assert schema_warning({"schema": 1, "agent": "0.1.0"}) is None
    assert "upgrade cpinspect" in schema_warning({"schema": 7, "agent": "3.0"})
    assert "reload the agent" in schema_warning({"schema": 0, "agent": "0.0.1"})
    assert "differs" in schema_warning({"schema": 1, "agent": "0.0.9"})


def test_snapshot_document_is_versioned_and_reads_back():
    snap = threads_from_json(load("agent_threads_v1.json"))
    info = info_from_json(load("agent_info_v1.json"))
    snapshot = Snapshot(taken_at=snap.taken_at, source=SourceKind.AGENT, info=info, threads=snap)
    doc = json.loads(json.dumps(snapshots_document([snapshot])))
    assert doc["kind"] == FILE_KIND and doc["schema"] == FILE_SCHEMA
    assert doc["snapshots"][0]["threads"]["threads"][0]["role"] in {r.value for r in Role}
    assert snapshots_from_document(doc) == (snapshot,)
