"""``DocumentEncoder``: the snapshot document's JSON, each thread's encoding reused by identity
(``dump --json`` and ``snapshot`` encode twice: while py-spy reads, and with its GIL holder)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import List

import pytest

import cpinspect.protocol as protocol
from cpinspect.model import Snapshot, SourceKind, ThreadsSnapshot
from cpinspect.protocol import DocumentEncoder, snapshots_document, snapshots_from_document
from tests.tui.fakes import T0, incident_threads, other_threads, worker


def snapshot(threads=None, name: str = "") -> Snapshot:
    threads = incident_threads() + other_threads() if threads is None else threads
    return Snapshot(
        taken_at=T0,
        source=SourceKind.AGENT,
        threads=ThreadsSnapshot(taken_at=T0, threads=tuple(threads)),
        notes=(name,) if name else (),
    )


def plain(snapshots) -> str:
    return json.dumps(snapshots_document(snapshots), separators=(",", ":"))


def test_the_text_is_byte_for_byte_the_compact_json_document() -> None:
    # GIVEN snapshots with threads, one without any, and strings that need escaping
    odd = worker(7, 3.0, '/caf\u00e9?q="x"\\y', handler="\u2603")
    series = [snapshot(), snapshot(threads=[]), snapshot([odd], name='a "quoted" note')]
    # WHEN encoded
    text = DocumentEncoder().encode(series)
    # THEN it is what json.dumps writes for the document, and reads back the same
    assert text == plain(series)
    assert snapshots_from_document(json.loads(text)) == tuple(series)


def test_a_second_encoding_converts_only_the_threads_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an encoder that encoded a snapshot once
    first = snapshot()
    encoder = DocumentEncoder()
    encoder.encode([first])
    converted: List[object] = []
    real = protocol.to_json

    def counting(obj):  # type: ignore[no-untyped-def]
        if type(obj).__name__ == "ThreadInfo":
            converted.append(obj)
        return real(obj)

    monkeypatch.setattr(protocol, "to_json", counting)
    # WHEN the same threads come again with one of them changed (py-spy's GIL holder joined)
    assert first.threads is not None
    threads = list(first.threads.threads)
    threads[2] = replace(threads[2], owns_gil=True)
    second = replace(first, threads=replace(first.threads, threads=tuple(threads)))
    text = encoder.encode([second])
    # THEN only that thread is converted again, and the text is the whole new document
    assert converted == [threads[2]]
    assert text == plain([second])
