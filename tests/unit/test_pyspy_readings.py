"""py-spy readings made cheap (issue 13): ``GilDump`` reads the GIL holder from the JSON text
without parsing the rest; ``DumpCache`` reuses what the last reading built; ``threads_from_reading``
parses only the threads whose JSON text moved since the last reading.

The fixtures are real ``py-spy dump --json`` outputs (CPython 3.8 and 3.11, with and without
locals and native frames), and one test reads a real process with this checkout's py-spy; the
holders read from the text must be exactly the threads the whole parse says own the GIL, in
every layout py-spy or a future version may print. py-spy's own layout is read in one pass, cut
into one piece per thread (``_holders_of``); anything else by the slower readings of the text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from cpinspect.errors import PySpyFailed
from cpinspect.sources import pyspy
from cpinspect.sources.pyspy import (
    DumpCache,
    FirstSeen,
    GilDump,
    _holders_in,
    _holders_of,
    _parse_json,
    _split_threads,
    threads_from_dump,
    threads_from_reading,
)
from cpinspect.sources.pyspy_exec import dump_command, locate_pyspy

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


# --- py-spy's layout read in one pass: the same answers as the whole parse ---------------------


def one_pass(raw: bytes) -> bool:
    """Whether ``GilDump`` reads ``raw`` piece by piece (py-spy's layout), not the slower ways."""
    pieces = _split_threads(raw)
    return bool(pieces) and _holders_of(pieces) is not None


def assert_reads_as_the_whole_parse(raw: bytes, cut: bool) -> GilDump:
    """Every answer of a reading of ``raw`` against ``json.loads`` of all of it: the holders
    (``owns_gil`` truthy), the count (one per ``thread_id`` key, as the model counts threads),
    the threads, and, when the text is ``cut``, its pieces, one per thread object."""
    whole = json.loads(raw.decode("utf-8"))
    dump = GilDump(raw)
    assert dump.holders == [t for t in whole if t.get("owns_gil")]
    assert dump.count() == sum(1 for t in whole if "thread_id" in t)
    pieces = dump.pieces()
    if cut:
        assert pieces is not None and dump._stdout == b""  # the text let go
        assert [json.loads(b"{" + piece + b"}") for piece in pieces] == whole
    else:
        assert pieces is None
    assert dump.threads() == whole
    assert dump.count() == len(whole)  # once parsed: every object of the list
    return dump


SPINNING = textwrap.dedent(
    """
    import queue, threading, time
    q = queue.Queue()
    def spin():
        x = 0
        while True:
            x += 1
    def sleep():
        while True:
            time.sleep(1)
    for f in (sleep, q.get, q.get, spin):
        threading.Thread(target=f, name="t-" + f.__name__, daemon=True).start()
    print("ready", flush=True)
    time.sleep(300)
    """
)


@pytest.fixture
def spinning() -> Iterator[int]:
    """A real Python process: a thread sleeping, two waiting on a queue, one spinning."""
    proc = subprocess.Popen([sys.executable, "-c", SPINNING], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("with_locals", [False, True], ids=["plain", "locals"])
def test_pyspys_own_output_is_read_in_one_pass_with_the_whole_parses_answers(
    spinning: int, with_locals: bool
) -> None:
    # GIVEN this checkout's py-spy reading a real process with one thread spinning
    executable = locate_pyspy()
    assert executable is not None, "py-spy is a dependency: `make venv` installs it"
    command = dump_command(executable, spinning, with_locals=with_locals)
    held = []
    for _ in range(10):  # the spinner holds the GIL nearly always: a read or two finds it
        raw = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
        # WHEN it is read for its GIL holder
        # THEN it is read piece by piece, and every answer is the whole parse's
        assert one_pass(raw)
        dump = assert_reads_as_the_whole_parse(raw, cut=True)
        assert dump.count() == 5
        held = [t["thread_name"] for t in dump.holders]
        if held:
            break
    # AND the holder was read that way too
    assert held == ["t-spin"]


def test_the_fixtures_in_py_spys_layout_are_read_in_one_pass() -> None:
    # GIVEN every real py-spy reading kept (one-space indents), and each as json indents it
    for path in DUMPS:
        for layout in ("as printed", "indented 4"):
            raw = layouts(path.read_bytes())[layout]
            # WHEN read, THEN piece by piece, with the whole parse's answers
            assert one_pass(raw), (path.name, layout)
            assert_reads_as_the_whole_parse(raw, cut=True)


def reading(owners: List[int], n: int = 8, **fields: Any) -> List[Dict[str, Any]]:
    """``n`` threads shaped as py-spy prints them, those in ``owners`` owning the GIL."""
    return [
        {
            "pid": 7,
            "thread_id": 1000 + i,
            "thread_name": "worker-%d" % i,
            "os_thread_id": 100 + i,
            "active": i in owners,
            "owns_gil": i in owners,
            "frames": [
                {"name": "f", "filename": "/app/x.py", "module": None, "line": i, "locals": None}
            ],
            "process_info": None,
            **fields,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("owners", [[], [3], [0, 7]], ids=["no holder", "one", "two"])
def test_no_holder_one_or_two_read_in_one_pass(owners: List[int]) -> None:
    # GIVEN readings in py-spy's layout with no GIL holder (it was released), one and two
    raw = json.dumps(reading(owners), indent=2).encode()
    # WHEN read, THEN piece by piece, with the whole parse's answers
    assert one_pass(raw)
    dump = assert_reads_as_the_whole_parse(raw, cut=True)
    assert [t["thread_id"] - 1000 for t in dump.holders] == owners


def test_compact_json_is_read_the_slower_way_with_the_same_answers() -> None:
    # GIVEN the same reading as compact JSON, spaced on one line, and py-spy's layout with
    # no space after the colons
    data = reading([2, 5])
    for raw, cut in (
        (json.dumps(data, separators=(",", ":")).encode(), False),
        (json.dumps(data).encode(), False),
        (json.dumps(data, indent=2, separators=(",", ":")).encode(), True),
    ):
        # WHEN read, THEN with the whole parse's answers (the last one cut into pieces)
        assert one_pass(raw) is cut
        assert_reads_as_the_whole_parse(raw, cut)


def test_the_keys_text_escaped_in_a_holders_strings_is_not_its_key() -> None:
    # GIVEN a holder, and threads before and after it, whose name (printed before the key),
    # locals and file names hold the key's text, with and without the newline and the
    # indentation it is looked for with (inside a JSON string: escaped)
    looks_like = '\n    "owns_gil": true,\n    "thread_id": 1'
    data = reading([4], thread_name=looks_like)
    for thread in data:
        thread["frames"][0]["filename"] = '/app/"owns_gil": true.py'
        thread["frames"][0]["locals"] = [
            {"name": "s", "addr": 1, "arg": False, "repr": looks_like},
            {"name": "t", "addr": 2, "arg": False, "repr": '"owns_gil": false'},
        ]
    raw = json.dumps(data, indent=2).encode()
    assert b'\\n    \\"owns_gil\\": true' in raw  # escaped, as JSON holds it
    # WHEN read, THEN piece by piece, and only thread 4 holds the GIL
    assert one_pass(raw)
    dump = assert_reads_as_the_whole_parse(raw, cut=True)
    assert [t["thread_id"] for t in dump.holders] == [1004]


def test_a_key_of_that_name_deeper_in_the_object_is_not_the_threads() -> None:
    # GIVEN holders in py-spy's layout with an object before their own key that has an
    # owns_gil key of its own, false (no py-spy prints one: a future field could)
    data = reading([])
    for thread in data:
        thread.pop("owns_gil")
        thread.pop("frames")
        thread["gil"] = {"owns_gil": False}
        thread["owns_gil"] = thread["thread_id"] % 3 == 0
        thread["frames"] = []
    raw = json.dumps(data, indent=2).encode()
    # WHEN read, THEN piece by piece (each thread's own key is where a key of the thread is),
    # with the whole parse's answers
    assert one_pass(raw)
    dump = assert_reads_as_the_whole_parse(raw, cut=True)
    assert [t["thread_id"] for t in dump.holders] == [1002, 1005]


def test_a_thread_without_the_key_or_with_another_value_is_read_the_slower_way() -> None:
    # GIVEN readings in py-spy's layout where one thread has no owns_gil key, or a value that
    # is not true or false (truthy or not), or a holder with no thread id
    data = reading([1])
    del data[5]["owns_gil"]
    odd: List[List[Dict[str, Any]]] = [data]
    for value in (None, 1, 0, "yes"):
        data = reading([1])
        data[6]["owns_gil"] = value
        odd.append(data)
    data = reading([1])
    data[1]["thread_id"] = "one"
    odd.append(data)
    for data in odd:
        raw = json.dumps(data, indent=2).encode()
        # WHEN read, THEN not piece by piece, and with the whole parse's answers (a truthy
        # value owns the GIL there too)
        assert not one_pass(raw)
        assert_reads_as_the_whole_parse(raw, cut=True)


def test_an_empty_object_between_threads_is_read_the_slower_way() -> None:
    # GIVEN py-spy's layout with an empty object between two threads, the second a holder
    # (the cut before "{}" leaves a piece that is not one object)
    data: List[Dict[str, Any]] = reading([4])
    data.insert(3, {})
    raw = json.dumps(data, indent=2).encode()
    # WHEN read, THEN not piece by piece, and with the whole parse's answers
    assert not one_pass(raw)
    dump = GilDump(raw)
    assert dump.holders == [data[5]]
    assert dump.count() == 8  # the threads with an id, as before
    assert dump.threads() == data


def test_a_thread_without_an_id_is_not_counted_as_the_model_leaves_it_out() -> None:
    # GIVEN a reading in py-spy's layout with one thread object that has no thread_id
    data = reading([1])
    del data[3]["thread_id"]
    raw = json.dumps(data, indent=2).encode()
    # WHEN read, THEN not piece by piece (a piece must have its id), the slower way instead
    assert not one_pass(raw)
    dump = GilDump(raw)
    assert dump.holders == [data[1]] and dump.pieces() is not None
    # AND it counts the threads with an id, as before (the model has no row for the other)
    assert dump.count() == 7 and dump.threads() == data


def test_whitespace_around_the_list_is_read_in_one_pass() -> None:
    # GIVEN py-spy's layout with more whitespace after it (py-spy ends it with one newline)
    # and before it
    text = json.dumps(reading([2]), indent=2)
    for raw in (text + "\n", text + "\n \t\r\n  ", "\n  " + text + "\n", text):
        # WHEN read, THEN piece by piece, with the whole parse's answers
        assert one_pass(raw.encode()), repr(raw[-6:])
        assert_reads_as_the_whole_parse(raw.encode(), cut=True)


@pytest.mark.parametrize("raw", [b"[]", b"[]\n", b"[\n]\n", b"  [ ]  "])
def test_an_empty_list_has_no_thread(raw: bytes) -> None:
    # GIVEN a reading of no thread (py-spy between a process's last thread and its exit)
    # WHEN read, THEN no holder, no thread, no piece
    assert_reads_as_the_whole_parse(raw, cut=False)
    assert GilDump(raw).count() == 0


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
