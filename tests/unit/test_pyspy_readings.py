"""py-spy readings made cheap (issue 13): ``GilDump`` reads the GIL holder from the JSON text
without parsing the rest; ``DumpCache`` reuses what the last reading built; ``threads_from_reading``
parses only the threads whose JSON text moved since the last reading.

The fixtures are real ``py-spy dump --json`` outputs (CPython 3.8 and 3.11, with and without
locals and native frames); the holders read from the text must be exactly the threads the whole
parse says own the GIL, in every layout py-spy or a future version may print.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from cpinspect.errors import PySpyFailed
from cpinspect.sources import pyspy
from cpinspect.sources.pyspy import (
    DumpCache,
    FirstSeen,
    GilDump,
    _holders_in,
    _parse_json,
    threads_from_dump,
    threads_from_reading,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DUMPS = sorted(FIXTURES.glob("pyspy_*.json"))


def holders_by_parsing(raw: bytes) -> List[Dict[str, Any]]:
    return [t for t in _parse_json(raw) if t.get("owns_gil")]


def layouts(raw: bytes) -> Dict[str, bytes]:
    """The same reading as py-spy prints it, compact, and with Python's own spacing."""
    data = json.loads(raw)
    return {
        "as printed": raw,
        "compact": json.dumps(data, separators=(",", ":")).encode(),
        "spaced": json.dumps(data).encode(),
        "indented 4": json.dumps(data, indent=4).encode(),
    }


@pytest.mark.parametrize("path", DUMPS, ids=[p.name for p in DUMPS])
def test_the_holders_read_from_the_text_are_those_of_the_whole_parse(path: Path) -> None:
    # GIVEN a real py-spy reading, in each layout its JSON may come in
    for layout, raw in layouts(path.read_bytes()).items():
        # WHEN only its GIL holders are read
        dump = GilDump(raw)
        # THEN they are the threads the whole parse says own the GIL, dict for dict
        assert dump.holders == holders_by_parsing(raw), layout
        # AND they were read from the text: the whole was not parsed for them
        assert _holders_in(raw) is not None, layout
        assert dump._threads is None, layout
        # AND every thread is there when asked for (py-spy standing in for the agent)
        assert dump.threads() == _parse_json(raw)


def test_the_reading_with_a_holder_gives_the_same_model_thread() -> None:
    # GIVEN the 3.11 reading, whose holder is a worker spinning in a handler
    raw = (FIXTURES / "pyspy_cherrypy_311.json").read_bytes()
    # WHEN the holder becomes a model thread, from the text and from the whole parse
    fast = threads_from_dump(GilDump(raw).holders, 100.0)
    slow = threads_from_dump(holders_by_parsing(raw), 100.0)
    # THEN both are the same one thread, marked as the GIL holder
    assert fast == slow
    assert [t.owns_gil for t in fast.threads] == [True]


def test_a_layout_it_does_not_read_is_parsed_whole_with_the_same_answer() -> None:
    # GIVEN a reading whose key and value are split over two lines (no py-spy prints that)
    raw = (FIXTURES / "pyspy_cherrypy_311.json").read_bytes()
    odd = raw.replace(b'"owns_gil": ', b'"owns_gil":\n        ')
    assert _holders_in(odd) is None
    # WHEN its holders are read
    # THEN the whole is parsed, and the answer is still the holder
    assert GilDump(odd).holders == holders_by_parsing(raw)


def test_a_holder_whose_name_looks_like_the_key_is_still_read_right() -> None:
    # GIVEN threads whose names hold the key's text (escaped inside a JSON string) and a
    # holder deep in a long reading
    threads = [
        {
            "pid": 7,
            "thread_id": n,
            "thread_name": '"owns_gil": true {"pid": 1}',
            "os_thread_id": 100 + n,
            "active": True,
            "owns_gil": n == 41,
            "frames": [{"name": "f", "filename": "/app/x.py", "line": n, "module": None}] * 50,
        }
        for n in range(60)
    ]
    raw = json.dumps(threads, indent=2).encode()
    # WHEN the holders are read from the text
    # THEN only thread 41 is one
    assert [t["thread_id"] for t in GilDump(raw).holders] == [41]
    assert _holders_in(raw) is not None


def test_output_that_is_not_a_thread_list_fails_in_one_line() -> None:
    # GIVEN py-spy output that is not JSON (a py-spy that printed an error on stdout)
    # WHEN it is read for its holder
    # THEN it fails as the whole parse does: one line naming what was printed
    with pytest.raises(PySpyFailed, match="not a JSON thread list: failed to find python"):
        GilDump(b"Error: failed to find python interpreter\n")
    with pytest.raises(PySpyFailed, match="not a JSON thread list"):
        GilDump(b'[{"pid": 1, "thread_id": 2, "owns_gil": true, "frames": [')


# --- building every thread: what the last reading built is reused, the result is the same ---


@pytest.mark.parametrize(
    "name", ["pyspy_cherrypy_311_locals.json", "pyspy_cherrypy_38_locals.json"]
)
def test_a_reading_built_with_the_cache_equals_one_built_without(name: str) -> None:
    # GIVEN a real reading with locals (requests known), read three times as py-spy would
    # while the process does not move, then once with one thread's stack moved on
    dump = json.loads((FIXTURES / name).read_bytes())
    moved = json.loads((FIXTURES / name).read_bytes())
    moved[0]["frames"][0]["line"] += 1
    readings = [dump, json.loads(json.dumps(dump)), json.loads(json.dumps(dump)), moved]
    cache = DumpCache()
    cached_seen, plain_seen = FirstSeen(), FirstSeen()
    before = None
    for n, reading in enumerate(readings):
        at = 100.0 + n
        # WHEN each is built with the cache and, from an equal copy, without it
        fast = threads_from_dump(reading, at, cached_seen, cache=cache)
        slow = threads_from_dump(json.loads(json.dumps(reading)), at, plain_seen)
        # THEN the snapshots are equal, thread for thread
        assert fast == slow
        if before is not None:
            # AND a thread with no request that py-spy saw unchanged is the same object
            # (the table formats nothing for it); one whose stack moved is new
            kept = {t.ident: t for t in before.threads}
            for thread in fast.threads:
                unchanged = n < 3 or thread.ident != reading[0]["thread_id"]
                if thread.elapsed is None and unchanged:
                    assert thread is kept[thread.ident]
            if n == 3:
                assert (
                    next(t for t in fast.threads if t.ident == reading[0]["thread_id"])
                    is not kept[reading[0]["thread_id"]]
                )
        before = fast
    # AND busy threads' elapsed times still move on with the readings
    busy = [t for t in before.threads if t.request is not None] if before else []
    assert busy and all(t.elapsed == 3.0 for t in busy)


# --- a whole reading parsed thread by thread: only the threads whose text moved ----------------


@pytest.mark.parametrize("path", DUMPS, ids=[p.name for p in DUMPS])
def test_a_reading_parsed_thread_by_thread_equals_the_whole_parse(path: Path) -> None:
    # GIVEN a real py-spy reading, in each layout its JSON may come in
    for layout, raw in layouts(path.read_bytes()).items():
        # WHEN every thread is built from the text, piece by piece where it can be cut
        fast = threads_from_reading(GilDump(raw), 100.0, cache=DumpCache())
        # THEN it is the snapshot the whole parse builds, thread for thread
        assert fast == threads_from_dump(_parse_json(raw), 100.0), layout
    # AND py-spy's own layout (and an indented one) is cut into one piece per thread
    raw = path.read_bytes()
    assert len(GilDump(raw).pieces() or ()) == len(_parse_json(raw))
    assert len(GilDump(layouts(raw)["indented 4"]).pieces() or ()) == len(_parse_json(raw))
    # AND a compact one is not cut (it is parsed whole)
    assert GilDump(layouts(raw)["compact"]).pieces() is None
    # AND once cut, the text is not kept beside its pieces, and the whole list is still there
    cut = GilDump(raw)
    assert cut.pieces() and cut._stdout == b""
    assert cut.threads() == _parse_json(raw) and cut.count() == len(_parse_json(raw))


def test_only_the_threads_whose_text_moved_are_new_objects() -> None:
    # GIVEN a real reading, then the same process read again with one thread moved on a line
    data = json.loads((FIXTURES / "pyspy_cherrypy_311.json").read_bytes())
    raw = json.dumps(data, indent=2).encode()  # both printed alike: only one thread differs
    data[3]["frames"][0]["line"] += 1
    again = json.dumps(data, indent=2).encode()
    cache = DumpCache()
    first = threads_from_reading(GilDump(raw), 100.0, cache=cache)
    # WHEN the second reading is built with the first one's cache
    second = threads_from_reading(GilDump(again), 101.0, cache=cache)
    # THEN it equals the whole parse of the second reading
    assert second == threads_from_dump(json.loads(again), 101.0)
    # AND every thread but the moved one is the first reading's object (not parsed again,
    # nothing for the table to format), the moved one is new
    before = first.by_ident()
    moved = data[3]["thread_id"]
    for thread in second.threads:
        assert (thread is before[thread.ident]) is (thread.ident != moved), thread.name
    # AND the cache holds only the second reading's threads (bounded by one reading)
    assert len(cache.order) == len(data) and len(cache.kept) == len(data)


def test_text_that_looks_like_a_cut_inside_a_string_does_not_cut_there() -> None:
    # GIVEN threads whose name holds the text a cut is made at (its newlines escaped, as JSON
    # strings hold them) and one thread whose name is not a string
    threads: List[Dict[str, Any]] = [
        {
            "pid": 7,
            "thread_id": n,
            "thread_name": 'x\n  },\n  {\n    "pid": 1 }',
            "os_thread_id": 100 + n,
            "owns_gil": n == 2,
            "frames": [{"name": "f", "filename": "/app/x.py", "line": n, "module": None}],
        }
        for n in range(5)
    ]
    threads.append({"pid": 7, "thread_id": "not an int", "frames": []})
    raw = json.dumps(threads, indent=2).encode()
    # WHEN it is read thread by thread
    dump = GilDump(raw)
    # THEN it is cut into one piece per thread, and reads as the whole parse does
    assert len(dump.pieces() or ()) == 6
    assert threads_from_reading(dump, 1.0) == threads_from_dump(_parse_json(raw), 1.0)
    assert [t.ident for t in threads_from_reading(dump, 1.0).threads] == [0, 1, 2, 3, 4]


def test_threads_that_shift_place_are_still_reused() -> None:
    # GIVEN a real reading, then the process read again with a new thread listed first (every
    # other thread one place later) and one thread moved on a line
    data = json.loads((FIXTURES / "pyspy_cherrypy_311.json").read_bytes())
    raw = json.dumps(data, indent=2).encode()
    newcomer = json.loads(json.dumps(data[0]))
    newcomer["thread_id"], newcomer["os_thread_id"] = 424242, 4242
    moved = data[2]["thread_id"]
    data[2]["frames"][0]["line"] += 1
    again = json.dumps([newcomer, *data], indent=2).encode()
    cache = DumpCache()
    first = threads_from_reading(GilDump(raw), 100.0, cache=cache)
    # WHEN the second reading is built with the first one's cache
    second = threads_from_reading(GilDump(again), 101.0, cache=cache)
    # THEN it equals the whole parse of the second reading
    assert second == threads_from_dump(json.loads(again), 101.0)
    # AND the threads that only changed place are the first reading's objects; the moved one
    # and the newcomer are new
    before = first.by_ident()
    for thread in second.threads:
        unchanged = thread.ident not in (moved, 424242)
        assert (thread is before.get(thread.ident)) is unchanged, thread.name


def test_the_same_reading_built_again_is_the_last_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a reading built once with a pid, its CPU times read from /proc (counted here)
    reads: List[int] = []
    real = pyspy.cpu_times

    def counted(pid: int, ids: Any) -> Dict[int, float]:
        reads.append(pid)
        return real(pid, ids)

    monkeypatch.setattr(pyspy, "cpu_times", counted)
    data = json.loads((FIXTURES / "pyspy_cherrypy_311.json").read_bytes())
    for n, thread in enumerate(data):  # this process's own task ids: /proc has CPU times
        thread["os_thread_id"] = os.getpid() if n == 0 else None
    dump = GilDump(json.dumps(data, indent=2).encode())
    cache = DumpCache()
    first = threads_from_reading(dump, 100.0, pid=os.getpid(), cache=cache)
    # WHEN the same reading is built again (a poll showing it while py-spy reads the next)
    again = threads_from_reading(dump, 100.0, pid=os.getpid(), cache=cache)
    # THEN it is the same snapshot, and /proc was read once, for the first build only
    assert again is first
    assert reads == [os.getpid()]
    # AND the CPU times that build read are kept for the next read's window
    assert cache.cpus is not None and os.getpid() in cache.cpus[1]
    # AND another reading object (py-spy read again) is built anew
    assert (
        threads_from_reading(
            GilDump(json.dumps(data, indent=2).encode()), 101.0, pid=os.getpid(), cache=cache
        )
        is not first
    )
    assert len(reads) == 2
