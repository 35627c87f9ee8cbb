"""py-spy's JSON into the model: real output captured from real CherryPy processes.

Fixtures (tests/fixtures/pyspy_*.json, machine paths rewritten to /srv/... and /usr/...):
  pyspy_cherrypy_311*.json  Python 3.11, CherryPy 18.10, cheroot 11.1, agent loaded, Autoreloader
                            on, pool of 7: one worker blocked in /block?...&token=s3cret, one
                            spinning in /spin, one reading a slow POST body (/upload?password=..),
                            one reading slow headers, one writing /stream to a client that does
                            not read, two idle. Plain, ``--locals`` and ``--native`` (blocking).
  pyspy_cherrypy_38*.json   the same app on Python 3.8 (py-spy gives bare function names there),
                            no agent.
  pyspy_plain_python.json   ``python -c "import time; time.sleep(60)"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from cpinspect.errors import (
    NoSuchProcess,
    NotPython,
    PermissionDenied,
    PySpyFailed,
    UnsupportedPython,
)
from cpinspect.formatting import format_elapsed, thread_elapsed_text
from cpinspect.model import Phase, Role, ThreadInfo, ThreadsSnapshot, evolve
from cpinspect.sources.pyspy import (
    LOOK_GAP,
    POOLS_NOTE,
    FirstSeen,
    error_from_pyspy,
    frame_from_pyspy,
    is_app_file,
    is_sensitive_local,
    locals_from_dump,
    looks_like_cherrypy,
    maps_show_python,
    threads_from_dump,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load(name: str) -> List[Dict[str, Any]]:
    data: List[Dict[str, Any]] = json.loads((FIXTURES / name).read_text())
    return data


def snapshot(name: str, taken_at: float = 1000.0) -> ThreadsSnapshot:
    return threads_from_dump(load(name), taken_at, FirstSeen())


def worker_in(snap: ThreadsSnapshot, function: str) -> ThreadInfo:
    """The worker whose stack has a frame named ``function`` (bare name)."""
    found = [t for t in snap.workers if any(f.function == function for f in t.stack)]
    assert len(found) == 1, [t.name for t in found]
    return found[0]


# --- roles ------------------------------------------------------------------------------------


def test_roles_from_names_and_stacks_on_311():
    # GIVEN a dump of a CherryPy process with the agent and the Autoreloader
    snap = snapshot("pyspy_cherrypy_311.json")
    # WHEN roles are derived from names and stacks
    roles = {t.name: t.role for t in snap.threads}
    # THEN each thread gets the role the agent would give it
    assert [n for n, r in roles.items() if r is Role.WORKER] == [
        n for n in roles if n.startswith("CP Server Thread-")
    ]
    assert len(snap.workers) == 7
    # (cheroot's thread that answers 503 to what the full queue cannot take: not an acceptor)
    assert roles["Thread-10 (_serve_unservicable)"] is Role.OVERFLOW
    assert roles["HTTPServer Thread-2 (_start_http_thread)"] is Role.ACCEPTOR
    assert roles["Autoreloader"] is Role.PLUGIN
    assert roles["MainThread"] is Role.MAIN
    assert {n for n, r in roles.items() if r is Role.AGENT} == {
        "cpinspect-http-1",
        "cpinspect-http-2",
        "cpinspect-http-3",
        "cpinspect-parker",
    }


def test_overflow_thread_found_by_its_stack_when_the_name_does_not_say_it():
    # GIVEN Python 3.8, where the unservicable-connection thread is just "Thread-9"
    snap = snapshot("pyspy_cherrypy_38.json")
    # THEN its stack (_serve_unservicable) makes it the overflow (503) thread, not "other"
    roles = {t.name: t.role for t in snap.threads}
    assert roles["Thread-9"] is Role.OVERFLOW
    assert roles["HTTPServer Thread-1"] is Role.ACCEPTOR
    assert roles["MainThread"] is Role.MAIN
    assert len(snap.workers) == 7


def test_a_renamed_worker_is_still_a_worker_by_its_stack():
    # GIVEN a worker thread the app renamed
    dump = load("pyspy_cherrypy_311.json")
    raw = next(t for t in dump if t["thread_name"] == "CP Server Thread-5")
    raw = dict(raw, thread_name="billing-worker")
    # WHEN parsed alone
    snap = threads_from_dump([raw], 1.0)
    # THEN the cheroot threadpool frames make it a busy worker
    (t,) = snap.threads
    assert t.role is Role.WORKER and t.busy and t.phase is Phase.HANDLER


def test_main_thread_without_a_name_is_recognised_by_its_os_thread_id():
    # GIVEN a process that never imported threading: py-spy has no name for its thread
    raw = dict(load("pyspy_plain_python.json")[0], thread_name=None)
    # WHEN parsed
    (t,) = threads_from_dump([raw], 1.0).threads
    # THEN os_thread_id == pid marks it as the main thread
    assert t.role is Role.MAIN and t.name == "MainThread"


# --- busy / idle / phases ----------------------------------------------------------------------


def test_a_worker_sleeping_in_its_handler_is_busy_although_pyspy_calls_it_idle():
    # GIVEN the worker blocked in Root.block: py-spy marks it inactive (it waits on an Event)
    dump = load("pyspy_cherrypy_311.json")
    raw = next(t for t in dump if any(f["name"] == "Root.block" for f in t["frames"]))
    assert raw["active"] is False
    # WHEN classified by its stack
    t = worker_in(threads_from_dump(dump, 1.0), "block")
    # THEN it is busy, in the handler
    assert t.busy is True and t.phase is Phase.HANDLER


@pytest.mark.parametrize("fixture", ["pyspy_cherrypy_311.json", "pyspy_cherrypy_38.json"])
def test_worker_states_from_stack_signatures(fixture):
    # GIVEN one worker in each state of cherrypy-internals.md 1.5
    snap = snapshot(fixture)
    # THEN each is classified from its stack signature
    assert worker_in(snap, "spin").phase is Phase.HANDLER
    assert worker_in(snap, "block").phase is Phase.HANDLER
    assert worker_in(snap, "process_urlencoded").phase is Phase.READING  # slow body
    assert worker_in(snap, "read_request_headers").phase is Phase.READING  # slow headers
    writing = [t for t in snap.workers if t.phase is Phase.WRITING]
    assert len(writing) == 1  # /stream to a client that does not read
    assert any(
        f.function == "write" and f.filename.endswith("cheroot/wsgi.py") for f in writing[0].stack
    )
    idle = [t for t in snap.workers if not t.busy]
    assert len(idle) == 2
    assert all(t.phase is Phase.IDLE for t in idle)
    assert all(t.busy for t in snap.workers if t.phase is not Phase.IDLE)


def test_non_workers_are_never_busy():
    snap = snapshot("pyspy_cherrypy_311.json")
    others = [t for t in snap.threads if t.role is not Role.WORKER]
    assert others and not any(t.busy for t in others)
    assert all(t.phase is Phase.UNKNOWN and t.request is None for t in others)


def test_gil_owner_comes_from_pyspy():
    snap = snapshot("pyspy_cherrypy_311.json")
    holders = [t for t in snap.threads if t.owns_gil]
    assert [t.top_app_frame.function for t in holders if t.top_app_frame] == ["spin"]
    assert all(t.owns_gil is False for t in snap.threads if t not in holders)


# --- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "handler"),
    [("pyspy_cherrypy_311_locals.json", "Root.block"), ("pyspy_cherrypy_38_locals.json", "block")],
)
def test_request_from_request_run_arguments_with_the_query_redacted(fixture, handler):
    # GIVEN a --locals dump: Request.run's args carry method, path and query_string
    snap = snapshot(fixture)
    # WHEN workers are parsed
    blocked = worker_in(snap, "block")
    # THEN the request is read from them, with sensitive values redacted
    assert blocked.request is not None
    assert (blocked.request.method, blocked.request.path) == ("GET", "/block")
    assert blocked.request.query == "seconds=300&token=***&x=1"
    assert blocked.request.source == "py-spy"
    assert blocked.request.handler == handler
    upload = worker_in(snap, "process_urlencoded")
    assert upload.request is not None and upload.request.target == "/upload?password=***"
    assert upload.request.handler is None  # still reading the body: no handler called yet
    # AND no secret reaches the model
    text = repr(snap)
    assert "s3cret" not in text and "hunter2" not in text


def test_without_locals_busy_workers_have_no_request():
    snap = snapshot("pyspy_cherrypy_311.json")
    busy = [t for t in snap.workers if t.busy]
    assert len(busy) == 5 and all(t.request is None for t in busy)


def test_workers_still_reading_headers_have_no_request_yet():
    # Before CherryPy's Request exists, cheroot's request object cannot be read by py-spy.
    snap = snapshot("pyspy_cherrypy_311_locals.json")
    assert worker_in(snap, "read_request_headers").request is None


def test_elapsed_is_measured_from_the_first_dump_that_saw_the_request():
    # GIVEN the same dump seen twice, 3 s apart, through one FirstSeen
    dump = load("pyspy_cherrypy_311_locals.json")
    seen = FirstSeen()
    threads_from_dump(dump, 100.0, seen)
    # WHEN the second dump is parsed
    snap = threads_from_dump(dump, 103.0, seen)
    # THEN each busy worker has been busy at least 3 s; idle ones have no elapsed
    blocked = worker_in(snap, "block")
    assert blocked.elapsed == pytest.approx(3.0)
    assert blocked.request is not None and blocked.request.started_at == 100.0
    assert worker_in(snap, "read_request_headers").elapsed == pytest.approx(3.0)  # by connection
    assert all(t.elapsed is None for t in snap.threads if not t.busy)


def test_a_new_request_on_the_same_thread_restarts_the_clock_and_old_entries_are_dropped():
    dump = load("pyspy_cherrypy_311_locals.json")
    seen = FirstSeen()
    threads_from_dump(dump, 100.0, seen)
    # GIVEN the blocked worker now holds another Request object (another address)
    changed = json.loads(json.dumps(dump).replace("<Request at 0x", "<Request at 0x1"))
    # WHEN parsed at the next look (within LOOK_GAP: a gap would make it a first look again)
    snap = threads_from_dump(changed, 101.0, seen)
    # THEN its elapsed starts again, and the first requests' entries are forgotten
    assert worker_in(snap, "block").elapsed == 0.0
    assert len(seen) == 5
    # AND a dump where everyone is idle empties the map
    threads_from_dump([], 120.0, seen)
    assert len(seen) == 0


def test_a_request_running_at_the_first_look_has_a_lower_bound_not_a_start():
    # GIVEN a first reading (the inspector attached while these requests ran) and a later
    # one where the blocked worker holds a new request
    dump = load("pyspy_cherrypy_311_locals.json")
    seen = FirstSeen()
    first = threads_from_dump(dump, 100.0, seen)
    changed = json.loads(json.dumps(dump).replace("<Request at 0x", "<Request at 0x1"))
    later = threads_from_dump(changed, 104.0, seen)
    # THEN the first reading's requests began before 100.0: their elapsed is a lower bound
    request = worker_in(first, "block").request
    assert request is not None and request.started_before and request.started_at == 100.0
    blocked = worker_in(later, "block")
    # AND a request first seen by a later reading began since the reading before: no bound
    assert blocked.request is not None and blocked.request.started_before is False
    # AND the texts say which is which
    assert format_elapsed(blocked) == "0.0 s"
    # (at the look that found it running, how long it ran is not known at all: no time)
    assert worker_in(first, "block").elapsed is None
    assert format_elapsed(worker_in(first, "block")) == "—"
    # AND at the next look it has run at least since the first
    again = threads_from_dump(dump, 101.0, seen_after(dump, 100.0))
    assert format_elapsed(worker_in(again, "block")) == "≥1.0 s"
    assert thread_elapsed_text(evolve(worker_in(first, "block"), elapsed=12.0)) == "≥12.0 s"


def seen_after(dump: List[Dict[str, Any]], taken_at: float) -> FirstSeen:
    """First sightings after one reading of ``dump`` at ``taken_at``."""
    seen = FirstSeen()
    threads_from_dump(dump, taken_at, seen)
    return seen


def test_a_reading_after_a_gap_is_a_first_look_again():
    # GIVEN readings one second apart, then none for longer than LOOK_GAP
    dump = load("pyspy_cherrypy_311_locals.json")
    changed = json.loads(json.dumps(dump).replace("<Request at 0x", "<Request at 0x1"))
    seen = FirstSeen()
    threads_from_dump(dump, 100.0, seen)
    threads_from_dump(dump, 101.0, seen)
    threads_from_dump([], 102.0, seen)
    # WHEN a reading comes after the gap with a request not seen before
    snap = threads_from_dump(changed, 102.0 + LOOK_GAP + 1.0, seen)
    # THEN it may have begun any time in the gap: a lower bound again
    request = worker_in(snap, "block").request
    assert request is not None and request.started_before


def test_snapshot_says_pool_numbers_need_the_agent():
    snap = snapshot("pyspy_cherrypy_311.json", taken_at=1234.5)
    assert snap.taken_at == 1234.5
    assert snap.pools == () and snap.pools_available is False and snap.pools_note == POOLS_NOTE
    assert snap.requests_served is None


# --- frames ------------------------------------------------------------------------------------


def test_qualified_names_on_311_bare_names_on_38():
    snap311 = snapshot("pyspy_cherrypy_311.json")
    snap38 = snapshot("pyspy_cherrypy_38.json")
    f311 = worker_in(snap311, "block").top_app_frame
    f38 = worker_in(snap38, "block").top_app_frame
    assert f311 is not None and (f311.function, f311.qualname) == ("block", "Root.block")
    assert f38 is not None and (f38.function, f38.qualname) == ("block", None)
    assert f311.display_name == "Root.block" and f38.display_name == "block"


def test_nested_function_names_keep_their_last_component():
    frame = frame_from_pyspy(
        {
            "name": "IOBase.readline.<locals>.nreadahead",
            "filename": "/usr/lib/python3.11/_pyio.py",
            "module": None,
            "line": 553,
        }
    )
    assert frame.function == "nreadahead"
    assert frame.qualname == "IOBase.readline.<locals>.nreadahead"
    assert frame.is_app is False


def test_grouping_key_is_file_and_line_whatever_the_names():
    # GIVEN the 3.11 dump, and the same dump with names stripped to 3.8's bare form
    dump = load("pyspy_cherrypy_311.json")
    bare = json.loads(json.dumps(dump))
    for thread in bare:
        for frame in thread["frames"]:
            frame["name"] = frame["name"].rsplit(".", 1)[-1]
    # WHEN both are parsed
    a = threads_from_dump(dump, 1.0).by_ident()
    b = threads_from_dump(bare, 1.0).by_ident()
    # THEN every thread has the same stack key, and the two idle workers share one
    assert {i: t.stack_key for i, t in a.items()} == {i: t.stack_key for i, t in b.items()}
    idle = [t for t in a.values() if t.phase is Phase.IDLE]
    assert len({t.stack_key for t in idle}) == 1


def test_native_frames_are_marked_and_python_frames_unchanged():
    # GIVEN a --native dump of the same process
    native = snapshot("pyspy_cherrypy_311_native.json")
    plain = snapshot("pyspy_cherrypy_311.json")
    # THEN C frames are marked native (never app), with py-spy's symbol or address as name
    blocked = worker_in(native, "block")
    c_frames = [f for f in blocked.stack if f.native]
    assert c_frames and all(not f.is_app and f.qualname is None for f in c_frames)
    assert any(f.function == "PyThread_acquire_lock_timed" for f in c_frames)
    assert any(".so" in f.filename for f in c_frames)
    # AND the Python frames are the ones a plain dump shows (the blocked worker did not move)
    python = tuple(f for f in blocked.stack if not f.native)
    assert python == worker_in(plain, "block").stack
    # AND states are still read correctly through the native frames
    assert blocked.busy and blocked.phase is Phase.HANDLER
    assert len([t for t in native.workers if t.phase is Phase.IDLE]) == 2


@pytest.mark.parametrize(
    ("filename", "app"),
    [
        ("/srv/app/shop/reports.py", True),
        ("/srv/app/tests/apps/target.py", True),
        ("app.py", True),
        ("/srv/venv/lib/python3.11/site-packages/cherrypy/_cprequest.py", False),
        ("/usr/lib/python3/dist-packages/requests/api.py", False),
        ("/usr/lib/python3.11/threading.py", False),
        ("/usr/lib64/python3.8/queue.py", False),
        ("<frozen runpy>", False),
        ("<string>", False),
        ("/srv/app/cpinspect/agent/server.py", False),
        ("", False),
    ],
)
def test_app_frames_as_far_as_the_rule_applies_from_outside(filename, app):
    assert is_app_file(filename) is app


def test_looks_like_cherrypy():
    assert looks_like_cherrypy(snapshot("pyspy_cherrypy_38.json"))
    assert not looks_like_cherrypy(snapshot("pyspy_plain_python.json"))


# --- locals ------------------------------------------------------------------------------------


def test_locals_of_the_blocked_worker_with_secrets_marked():
    # GIVEN a --locals dump and the blocked worker's ident
    dump = load("pyspy_cherrypy_311_locals.json")
    ident = worker_in(threads_from_dump(dump, 1.0), "block").ident
    # WHEN its locals are parsed
    tl = locals_from_dump(dump, ident, 5.0)
    # THEN every frame is there, innermost first, and values are kept unredacted
    assert tl is not None and tl.ident == ident and tl.taken_at == 5.0
    assert tl.name.startswith("CP Server Thread-")
    by_frame = {fl.frame.display_name: {v.name: v for v in fl.variables} for fl in tl.frames}
    assert tl.frames[0].frame.function == "wait"
    block = by_frame["Root.block"]
    assert block["seconds"].value == '"300"' and block["seconds"].is_arg
    assert not block["seconds"].sensitive
    # AND a dict holding a token, the raw query string and the WSGI environ are sensitive
    assert block["params"].sensitive and "s3cret" in block["params"].value
    run = by_frame["Request.run"]
    assert run["query_string"].sensitive and run["url"].sensitive
    assert not run["method"].sensitive and not run["path"].sensitive
    assert by_frame["Tree.__call__"]["environ"].sensitive


def test_locals_of_a_thread_that_is_gone():
    assert locals_from_dump(load("pyspy_cherrypy_311_locals.json"), 12345, 1.0) is None


@pytest.mark.parametrize(
    ("name", "value", "sensitive"),
    [
        ("seconds", '"300"', False),
        ("path", '"/block"', False),
        ("password", '"hunter2"', True),
        ("api_key", '"x"', True),
        ("cookie_header", '"a=b"', True),
        ("Session", "<RamSession at 0x7f>", True),
        ("authorization", '"x"', True),
        ("h", '"Bearer abc.def"', True),
        ("env", '{"HTTP_COOKIE": "sid=1", "PATH_INFO": "/"}', True),
        ("env", '{"HTTP_AUTHORIZATION": "Basic eA==", ...}', True),
        ("params", '{"token": "x", "a": "1"}', True),
        ("params", '{"a": "1", "b": 2}', False),
        ("qs", '"a=1&sid=2"', True),
        ("qs", '"a=1&b=2"', False),
        ("blob", '"' + "x" * 124 + '..."', True),  # py-spy cut a long string
        ("data", "[" + ", ".join(["1"] * 80) + "]", True),  # > 200 characters
        ("n", "42", False),
    ],
)
def test_local_sensitivity(name, value, sensitive):
    assert is_sensitive_local(name, value) is sensitive


# --- py-spy's errors (texts captured from py-spy 0.4.3 with RUST_BACKTRACE=0) ------------------

PERMISSION_AS_OTHER_USER = (
    "Permission Denied: Try running again with elevated permissions by going "
    "'sudo env \"PATH=$PATH\" !!'\n"
)
PERMISSION_WITHOUT_CAP_SYS_PTRACE = (
    "Error: Failed to get process executable name. Check that the process is running.\n\n"
    "Caused by:\n    0: Permission denied (os error 13)\n    1: Permission denied (os error 13)\n"
)
NO_SUCH_PID = (
    "Error: Failed to get process executable name. Check that the process is running.\n\n"
    "Caused by:\n    0: No such file or directory (os error 2)\n"
    "    1: No such file or directory (os error 2)\n"
)
NOT_PYTHON = "Error: Failed to find python version from target process\n"
STOPPED_BLOCKING = (
    "Error: Failed to get stack traces\n\nCaused by:\n    0: Failed to suspend process\n"
    "    1: unexpected waitpid result PtraceEvent(Pid(24859), SIGSTOP, 128) to 24859\n"
)
UNSUPPORTED = "Error: Unsupported version of Python: 3.16.0a1\n"


@pytest.mark.parametrize("text", [PERMISSION_AS_OTHER_USER, PERMISSION_WITHOUT_CAP_SYS_PTRACE])
def test_permission_errors_say_how_to_fix_them(text):
    err = error_from_pyspy(42, text, ptrace_scope=1)
    assert isinstance(err, PermissionDenied)
    assert "pid 42" in str(err) and "ptrace" in str(err)
    assert "--cap-add=SYS_PTRACE" in str(err) and "root" in str(err)
    assert "\n" not in str(err)


def test_permission_error_names_a_strict_yama_setting():
    assert "ptrace_scope=2" in str(error_from_pyspy(42, PERMISSION_AS_OTHER_USER, ptrace_scope=2))
    assert "ptrace_scope=3" in str(error_from_pyspy(42, PERMISSION_AS_OTHER_USER, ptrace_scope=3))


def test_no_such_process():
    err = error_from_pyspy(42, NO_SUCH_PID)
    assert isinstance(err, NoSuchProcess) and str(err) == "no process with pid 42 (it has exited)"
    assert isinstance(error_from_pyspy(42, "anything", process_exists=False), NoSuchProcess)
    assert isinstance(error_from_pyspy(42, "anything", state="Z"), NoSuchProcess)


def test_not_python_vs_a_python_py_spy_cannot_read():
    assert isinstance(error_from_pyspy(42, NOT_PYTHON, python=False), NotPython)
    err = error_from_pyspy(42, NOT_PYTHON, python=True)
    assert isinstance(err, UnsupportedPython) and "pip install -U py-spy" in str(err)


def test_unsupported_version_is_named():
    err = error_from_pyspy(42, UNSUPPORTED)
    assert isinstance(err, UnsupportedPython)
    assert "Python 3.16.0a1" in str(err) and "pip install -U py-spy" in str(err)


def test_a_stopped_target_in_blocking_mode():
    err = error_from_pyspy(42, STOPPED_BLOCKING, state="T")
    assert isinstance(err, PySpyFailed)
    assert "stopped (state T)" in str(err) and "kill -CONT 42" in str(err)


def test_a_stopped_target_in_blocking_mode_without_native_frames():
    err = error_from_pyspy(42, STOPPED_BLOCKING, state="T", paused_for="blocking mode")
    assert str(err) == (
        "pid 42 is stopped (state T) and py-spy cannot pause it for blocking mode: resume it "
        "(`kill -CONT 42`) or read it in nonblocking mode"
    )


@pytest.mark.parametrize(
    ("path", "python"),
    [
        ("/usr/bin/python3.11", True),
        ("/usr/bin/python3.11 (deleted)", True),  # upgraded under a long-running process
        ("/srv/py/lib/libpython3.11.so.1.0", True),
        ("/usr/bin/python2.7", True),
        ("/usr/bin/sleep", False),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", False),
        ("/srv/app/python3-notes.txt", False),
    ],
)
def test_which_processes_map_python(path, python):
    line = "7f0000000000-7f0000001000 r-xp 00000000 08:01 1234     %s\n" % path
    maps = "7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0      [stack]\n" + line
    assert maps_show_python(maps) is python


def test_anything_else_gives_the_first_line():
    err = error_from_pyspy(42, "\nError: Something new went wrong\n\nCaused by:\n  0: detail\n")
    assert isinstance(err, PySpyFailed)
    assert str(err) == "py-spy failed on pid 42: Something new went wrong"
