"""Snapshot files: capture, atomic and private writing, reading back whatever is on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cpinspect
from cpinspect import model
from cpinspect.errors import CpinspectError, SnapshotFileError, SnapshotWriteError
from cpinspect.model import (
    Frame,
    FrameLocals,
    LocalVar,
    Snapshot,
    SourceKind,
)
from cpinspect.protocol import FILE_KIND, FILE_SCHEMA, from_json, snapshots_document, to_json
from cpinspect.snapshots import (
    TMP_PREFIX,
    encode_snapshots,
    read_snapshots,
    redacted,
    snapshot_from_update,
    snapshot_stem,
    with_source_lines,
    write_snapshots,
)
from tests.tui.fakes import (
    GIL_HOLDER,
    INFO,
    SOURCE,
    T0,
    fallback_update,
    incident_update,
    pool,
    shop_routes,
    snapshot,
    stuck_threads,
    thread_locals,
    update,
)

REPO = Path(__file__).resolve().parents[2]
MODEL_DATACLASSES = sorted(
    (
        v
        for v in vars(model).values()
        if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == model.__name__
    ),
    key=lambda cls: cls.__name__,
)
SECRETS = ("hunter2-SECRET", "COOKIE-SECRET-99", "tok-SECRET-1234")


def has_format_report() -> bool:
    from cpinspect import formatting

    return hasattr(formatting, "format_report")


needs_report = pytest.mark.skipif(
    not has_format_report(), reason="cpinspect.formatting.format_report is not written yet"
)


@pytest.fixture(scope="module", autouse=True)
def finite_floats() -> Iterator[None]:
    """JSON has no NaN or infinity: floats drawn here are finite (for this module only)."""
    st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False))
    yield
    st.register_type_strategy(float, st.floats())  # hypothesis's own default for float


def incident_snapshot(taken_at: float = T0, **changes: Any) -> Snapshot:
    """A capture in the middle of the incident: agent + py-spy, routes, locals, source lines."""
    snap = snapshot_from_update(
        replace(fallback_update(taken_at), pyspy_joined=True, threads_source=None),
        routes=shop_routes(taken_at),
        locals_=(thread_locals(),),
        notes=("captured by a test",),
    )
    snap = with_source_lines(snap, DictReader(SOURCE))
    return replace(snap, **changes)


class DictReader:
    """A ``LineReader`` over a dict, counting how often each location is asked for."""

    def __init__(self, lines: Dict[Tuple[str, int], str]) -> None:
        self.lines = lines
        self.asked: Dict[Tuple[str, int], int] = {}

    def line(self, filename: str, lineno: int) -> Optional[str]:
        key = (filename, lineno)
        self.asked[key] = self.asked.get(key, 0) + 1
        return self.lines.get(key)


def visible_files(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def assert_one_line(err: BaseException, *words: str) -> None:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, (word, message)


# --- the model survives the file format ----------------------------------------------------


@pytest.mark.parametrize("cls", MODEL_DATACLASSES, ids=lambda cls: cls.__name__)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_model_dataclass_round_trips_through_json(cls: type, data: st.DataObject) -> None:
    # GIVEN any instance of a model dataclass
    obj = data.draw(st.from_type(cls))
    # WHEN it is written as a file writes it and read back
    back = from_json(cls, json.loads(json.dumps(to_json(obj), separators=(",", ":"))), "x")
    # THEN it is the same object
    assert back == obj


def test_every_model_dataclass_is_covered() -> None:
    # GIVEN the model module  THEN the round trip above sees its snapshot types
    names = {cls.__name__ for cls in MODEL_DATACLASSES}
    assert {"Snapshot", "ThreadInfo", "ThreadLocals", "SourceLine", "RoutesSnapshot"} <= names


def test_a_series_round_trips_through_files_on_disk(tmp_path: Path) -> None:
    # GIVEN three captures a second apart, revealed so that nothing is replaced on the way
    series = [incident_snapshot(T0 + i) for i in range(3)]
    # WHEN they are written and read back
    written = write_snapshots(series, tmp_path, reveal=True, report=False)
    back = read_snapshots(written.json_path)
    # THEN the file holds exactly them, marked revealed, and only that file was written
    assert back == tuple(replace(s, revealed=True) for s in series)
    assert written.report_path is None
    assert visible_files(tmp_path) == [written.json_path.name]
    assert written.json_path.name.endswith("-x3.json")


def test_a_redacted_capture_reads_back_as_redacted(tmp_path: Path) -> None:
    # GIVEN a capture with hidden locals
    snap = incident_snapshot()
    # WHEN written without reveal
    back = read_snapshots(write_snapshots([snap], tmp_path, report=False).json_path)
    # THEN what is read is what redaction let through
    assert back == (redacted(snap, reveal=False),)
    assert back[0].revealed is False


def test_file_names_carry_pid_time_and_series_length() -> None:
    # GIVEN captures with and without a pid
    snap = incident_snapshot()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(T0))
    # THEN names say whose and when, and how many for a series
    assert snapshot_stem([snap]) == f"cpinspect-4121-{stamp}"
    assert snapshot_stem([snap, snap]) == f"cpinspect-4121-{stamp}-x2"
    assert snapshot_stem([replace(snap, info=None)]) == f"cpinspect-unknown-{stamp}"


def test_an_old_schema_1_dump_opens(tmp_path: Path) -> None:
    # GIVEN a file written by cpinspect 0.1's `dump --json`
    threads = snapshot(stuck_threads(), pools=[pool()])
    doc = {
        "schema": 1,
        "cpinspect": "0.1.0",
        "source": "agent",
        "info": to_json(INFO),
        "threads": to_json(threads),
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc, indent=2))
    # WHEN it is read
    (snap,) = read_snapshots(path)
    # THEN it is a snapshot of the same process and threads
    assert snap.info == INFO and snap.threads == threads
    assert snap.source is SourceKind.AGENT and snap.taken_at == threads.taken_at
    assert snap.cpinspect == "0.1.0"


# --- files that cannot be opened: one line, what to do ----------------------------------------


@pytest.fixture
def good_bytes() -> bytes:
    return encode_snapshots([incident_snapshot()])


@pytest.mark.parametrize("keep", [1, 2, 10, 0.1, 0.5, 0.9, -1, -2, -30])
def test_a_file_cut_short_says_so(tmp_path: Path, good_bytes: bytes, keep: float) -> None:
    # GIVEN a snapshot file copied while it was being written: only its first bytes
    n = int(len(good_bytes) * keep) if isinstance(keep, float) else keep % len(good_bytes)
    path = tmp_path / "cut.json"
    path.write_bytes(good_bytes[:n])
    # WHEN it is opened  THEN the error says it is cut short, in one line naming the file
    with pytest.raises(SnapshotFileError) as err:
        read_snapshots(path)
    assert_one_line(err.value, str(path), "cut short")


def test_a_file_cut_inside_a_literal_or_a_number_is_cut_short(tmp_path: Path) -> None:
    # GIVEN JSON that stops inside `true`, a number, a string, after a key
    for text in ('{"a": tr', '{"a": 1.', '{"a": -', '{"a": 1e', '{"a": "abc', '{"a"', "[1, "):
        path = tmp_path / "cut.json"
        path.write_text(text)
        # THEN each is reported cut short, not corrupt
        with pytest.raises(SnapshotFileError) as err:
            read_snapshots(path)
        assert_one_line(err.value, "cut short")


def test_corrupt_json_names_the_line_and_column(tmp_path: Path, good_bytes: bytes) -> None:
    # GIVEN a file damaged in the middle
    middle = len(good_bytes) // 2
    path = tmp_path / "corrupt.json"
    path.write_bytes(good_bytes[:middle] + b"\x01#!" + good_bytes[middle:])
    # WHEN it is opened  THEN it is not JSON, with where it breaks
    with pytest.raises(SnapshotFileError) as err:
        read_snapshots(path)
    assert_one_line(err.value, str(path), "not JSON", "line 1 column")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ("is empty",)),
        (b"  \n\n", ("is empty",)),
        (b"\xff\xfe\x00garbage", ("not UTF-8",)),
        (b"hello world", ("not JSON", "line 1 column 1")),
        (b'[{"thread_id": 1, "frames": []}]', ("py-spy's dump --json",)),
        (b"[1, 2, 3]", ("a JSON list", "not a cpinspect snapshot")),
        (b'{"name": "my-app", "version": "1.0"}', ("not a cpinspect snapshot",)),
        (b'"just a string"', ("not a cpinspect snapshot",)),
        (b"[" * 100_000 + b"]" * 100_000, ("not a cpinspect snapshot",)),
    ],
    ids=[
        "empty",
        "blank",
        "binary",
        "text",
        "pyspy-list",
        "other-list",
        "other-object",
        "string",
        "deep",
    ],
)
def test_files_that_are_not_snapshots(tmp_path: Path, content: bytes, words: Tuple[str]) -> None:
    # GIVEN a file that is not (or no longer) a cpinspect snapshot
    path = tmp_path / "f.json"
    path.write_bytes(content)
    # WHEN it is opened  THEN one line says what it is
    with pytest.raises(SnapshotFileError) as err:
        read_snapshots(path)
    assert_one_line(err.value, str(path), *words)


def test_a_newer_schema_says_to_upgrade(tmp_path: Path) -> None:
    # GIVEN a file from a future cpinspect
    doc = snapshots_document([incident_snapshot()])
    doc.update(schema=FILE_SCHEMA + 1, cpinspect="9.0.0")
    path = tmp_path / "new.json"
    path.write_text(json.dumps(doc))
    # WHEN it is opened  THEN the line says who wrote it and to upgrade
    with pytest.raises(SnapshotFileError) as err:
        read_snapshots(path)
    assert_one_line(err.value, str(path), "newer cpinspect", "9.0.0", "upgrade cpinspect")


def test_a_field_of_the_wrong_type_names_where(tmp_path: Path) -> None:
    # GIVEN a file edited by hand: a thread's ident became a string
    doc = snapshots_document([incident_snapshot()])
    doc["snapshots"][0]["threads"]["threads"][3]["ident"] = "not\na number"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    # WHEN it is opened  THEN the line names the field's path
    with pytest.raises(SnapshotFileError) as err:
        read_snapshots(path)
    assert_one_line(err.value, str(path), "damaged", "snapshots[0].threads.threads[3].ident")


def test_a_document_with_no_snapshots(tmp_path: Path) -> None:
    # GIVEN a well-formed document holding nothing
    path = tmp_path / "none.json"
    path.write_text(json.dumps({"kind": FILE_KIND, "schema": FILE_SCHEMA, "snapshots": []}))
    # THEN it says so
    with pytest.raises(SnapshotFileError) as err:
        read_snapshots(path)
    assert_one_line(err.value, "no snapshots")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    # GIVEN a path that does not exist, and a directory
    for path, words in ((tmp_path / "nope.json", ("no such file",)), (tmp_path, ("directory",))):
        # WHEN opened  THEN one line each
        with pytest.raises(SnapshotFileError) as err:
            read_snapshots(path)
        assert_one_line(err.value, str(path), *words)


def _as_unprivileged(request: pytest.FixtureRequest, func: Callable[[], str]) -> str:
    """``func()`` as we are, or, as root (whom modes do not stop), as a throwaway user."""
    if os.geteuid() != 0:
        return func()
    from tests.helpers import run_as

    return str(run_as(request.getfixturevalue("other_user"), func))


def _shared_dir() -> Path:
    """A directory another user can traverse (pytest's tmp_path is 0700 under root)."""
    where = Path(tempfile.mkdtemp(prefix="cpinspect-test-"))
    where.chmod(0o755)
    return where


def _error_of(call: Callable[[], object]) -> str:
    try:
        call()
    except CpinspectError as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return "no error"


def test_an_unreadable_file(request: pytest.FixtureRequest, good_bytes: bytes) -> None:
    # GIVEN a snapshot someone else saved, mode 0000
    where = _shared_dir()
    try:
        path = where / "theirs.json"
        path.write_bytes(good_bytes)
        path.chmod(0)
        # WHEN opened by a user who may not read it
        error = _as_unprivileged(request, lambda: _error_of(lambda: read_snapshots(path)))
        # THEN permission denied, with what to do, on one line
        assert error.startswith("SnapshotFileError: ") and "\n" not in error
        assert str(path) in error and "permission denied" in error
    finally:
        shutil.rmtree(where)


def test_read_errors_exit_with_their_code() -> None:
    # GIVEN the two snapshot errors  THEN they have their own exit codes
    assert SnapshotFileError.exit_code == 20 and SnapshotWriteError.exit_code == 21


# --- writing: private, atomic, never over anything --------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_written_files_are_mode_0600(tmp_path: Path, umask: int) -> None:
    # GIVEN any umask
    old = os.umask(umask)
    try:
        # WHEN a capture is written
        written = write_snapshots([incident_snapshot()], tmp_path, report=False)
    finally:
        os.umask(old)
    # THEN only its owner can read it, and no temporary file is left behind
    assert stat.S_IMODE(written.json_path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    # GIVEN a snapshot already saved under the name the next one would take
    snap = incident_snapshot()
    first = write_snapshots([snap], tmp_path, report=False).json_path
    before = first.read_bytes()
    # WHEN the same capture is saved twice more
    second = write_snapshots([snap], tmp_path, report=False).json_path
    third = write_snapshots([snap], tmp_path, report=False).json_path
    # THEN each gets the next free name and the first is untouched
    assert first.read_bytes() == before
    assert second.name == first.name.replace(".json", "-2.json")
    assert third.name == first.name.replace(".json", "-3.json")


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    # GIVEN a symlink planted at the would-be name, pointing at a file worth protecting
    snap = incident_snapshot()
    target = tmp_path / "precious"
    target.write_text("do not touch")
    out = tmp_path / "out"
    out.mkdir()
    planted = out / (snapshot_stem([snap]) + ".json")
    planted.symlink_to(target)
    # WHEN the capture is written there
    written = write_snapshots([snap], out, report=False)
    # THEN the target is untouched, the symlink still a symlink, the capture beside it
    assert target.read_text() == "do not touch"
    assert planted.is_symlink() and os.readlink(planted) == str(target)
    assert written.json_path.name.endswith("-2.json")
    assert read_snapshots(written.json_path)[0].taken_at == snap.taken_at


@needs_report
def test_json_and_report_share_a_name_even_when_one_is_taken(tmp_path: Path) -> None:
    # GIVEN the report's name alone already taken
    snap = incident_snapshot()
    stem = snapshot_stem([snap])
    (tmp_path / (stem + ".txt")).write_text("someone else's notes")
    # WHEN a capture with its report is written
    written = write_snapshots([snap], tmp_path)
    # THEN both moved on to the same next name, and the taken file is untouched
    assert written.json_path.name == stem + "-2.json"
    assert written.report_path is not None and written.report_path.name == stem + "-2.txt"
    assert (tmp_path / (stem + ".txt")).read_text() == "someone else's notes"
    assert not (tmp_path / (stem + ".json")).exists()
    assert stat.S_IMODE(written.report_path.stat().st_mode) == 0o600


def test_writing_into_a_missing_directory_or_a_file(tmp_path: Path) -> None:
    # GIVEN places that are not directories
    afile = tmp_path / "afile"
    afile.write_text("x")
    for where, words in (
        (tmp_path / "missing", ("does not exist",)),
        (afile, ("not a directory",)),
    ):
        # WHEN a capture is written there  THEN one line says why
        with pytest.raises(SnapshotWriteError) as err:
            write_snapshots([incident_snapshot()], where, report=False)
        assert_one_line(err.value, str(where), *words)


def test_writing_into_a_read_only_directory(request: pytest.FixtureRequest) -> None:
    # GIVEN a directory we may not write to
    ro = _shared_dir()
    ro.chmod(0o555)
    try:
        # WHEN a capture is written there
        snap = incident_snapshot()
        error = _as_unprivileged(
            request, lambda: _error_of(lambda: write_snapshots([snap], ro, report=False))
        )
        # THEN one line says it is not writable, and nothing is left behind
        assert error.startswith("SnapshotWriteError: ") and "\n" not in error
        assert str(ro) in error and "not writable" in error
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
        shutil.rmtree(ro)


WRITER = textwrap.dedent(
    """
    import sys
    from cpinspect.model import Frame, ThreadInfo, ThreadsSnapshot, Role, Snapshot, SourceKind
    from cpinspect.snapshots import write_snapshots

    stack = tuple(Frame("/srv/app/mod%d.py" % i, 10 + i, "f%d" % i, is_app=i % 2 == 0)
                  for i in range(20))
    threads = tuple(ThreadInfo(ident=1000 + n, name="CP Server Thread-%d" % n,
                               role=Role.WORKER, busy=True, stack=stack) for n in range(1000))
    snap = Snapshot(taken_at=1750000000.0, source=SourceKind.AGENT,
                    threads=ThreadsSnapshot(taken_at=1750000000.0, threads=threads))
    print("READY", flush=True)
    for _ in range(200):
        write_snapshots([snap], sys.argv[1], report=False)
    """
)


def wait_for_new_temp_file(directory: Path, before: Set[str], deadline: float) -> None:
    """Until the writer has a file open (a write is under way), or the deadline passes."""
    while time.monotonic() < deadline:
        if any(n.startswith(TMP_PREFIX) and n not in before for n in os.listdir(directory)):
            return
        time.sleep(0.0002)
    raise AssertionError("the writer never started writing")


def test_a_capture_killed_mid_write_leaves_no_file_or_a_complete_one(tmp_path: Path) -> None:
    # GIVEN a real process saving a 1,000-thread capture (~2 MB) over and over
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for delay in (0.0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.02, 0.05):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(REPO),
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"READY\n"  # blocks until the child is ready
            before = set(os.listdir(tmp_path))
            wait_for_new_temp_file(tmp_path, before, time.monotonic() + 60)
            # WHEN it is SIGKILLed while writing, at a different point each time (writing,
            # syncing, naming, or just after)
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
            if child.stdout is not None:
                child.stdout.close()
    # THEN every visible capture left behind is complete
    saved = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert all(p.suffix == ".json" for p in saved)
    for path in saved:
        (snap,) = read_snapshots(path)
        assert snap.threads is not None and len(snap.threads.threads) == 1000
        assert all(len(t.stack) == 20 for t in snap.threads.threads)
    # and whatever a kill interrupted is only ever a hidden temporary file
    assert all(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir() if p not in saved)


# --- secrets ---------------------------------------------------------------------------------


def secret_snapshot() -> Snapshot:
    locals_ = thread_locals()
    frame = FrameLocals(
        Frame("/srv/shop/shop/login.py", 14, "login"),
        (
            LocalVar("password", "'hunter2-SECRET'", is_arg=True, sensitive=True),
            LocalVar("user", "'alice'", is_arg=True),
        ),
    )
    locals_ = replace(locals_, frames=(frame, *locals_.frames))
    return incident_snapshot(locals=(locals_,))


def written_bytes(written: Any) -> bytes:
    out = written.json_path.read_bytes()
    if written.report_path is not None:
        out += written.report_path.read_bytes()
    return out


@needs_report
def test_no_secret_reaches_disk_unless_revealed(tmp_path: Path) -> None:
    # GIVEN a capture whose locals hold a password, a cookie and a token
    snap = secret_snapshot()
    (tmp_path / "hidden").mkdir()
    (tmp_path / "shown").mkdir()
    # WHEN it is written with its report, without reveal
    data = written_bytes(write_snapshots([snap], tmp_path / "hidden", reveal=False))
    # THEN neither the JSON nor the report holds any of them; ordinary values are there
    for secret in SECRETS:
        assert secret.encode() not in data
    assert b"alice" in data
    # WHEN it is written with reveal  THEN the values are there, as asked
    revealed = write_snapshots([snap], tmp_path / "shown", reveal=True)
    assert b"hunter2-SECRET" in revealed.json_path.read_bytes()
    for secret in SECRETS:
        assert secret.encode() in written_bytes(revealed)


@pytest.fixture
def two_dirs(tmp_path: Path) -> Path:
    (tmp_path / "hidden").mkdir()
    (tmp_path / "shown").mkdir()
    return tmp_path


def test_no_secret_in_the_json_unless_revealed(two_dirs: Path) -> None:
    # GIVEN a capture whose locals hold a password, a cookie and a token
    snap = secret_snapshot()
    # WHEN written without reveal  THEN the JSON holds none of them, and says it was not revealed
    hidden = write_snapshots([snap], two_dirs / "hidden", report=False).json_path.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in hidden
    assert b"alice" in hidden and b'"revealed":false' in hidden
    # WHEN written with reveal  THEN they are all there
    shown = write_snapshots([snap], two_dirs / "shown", reveal=True, report=False)
    data = shown.json_path.read_bytes()
    assert all(secret.encode() in data for secret in SECRETS) and b'"revealed":true' in data


def test_redacted_hides_only_sensitive_values() -> None:
    # GIVEN locals with sensitive and ordinary values
    snap = secret_snapshot()
    # WHEN redacted
    out = redacted(snap, reveal=False)
    # THEN sensitive values are *** and nothing else changed
    before = [v for t in snap.locals for f in t.frames for v in f.variables]
    after = [v for t in out.locals for f in t.frames for v in f.variables]
    assert [v.name for v in before] == [v.name for v in after]
    for b, a in zip(before, after):
        assert a.value == ("***" if b.sensitive else b.value)
    assert out.revealed is False and redacted(snap, reveal=True).revealed is True
    assert redacted(snap, reveal=True).locals == snap.locals


# --- capture ---------------------------------------------------------------------------------


def test_with_source_lines_reads_each_location_once() -> None:
    # GIVEN threads sharing stacks, locals frames, a native frame, and a file now unreadable
    native = Frame("Modules/_sre/sre.c", 772, "search_impl", native=True)
    snap = incident_snapshot(source_lines=())
    assert snap.threads is not None
    first = snap.threads.threads[0]
    threads = replace(
        snap.threads,
        threads=(replace(first, stack=(native, *first.stack)), *snap.threads.threads[1:]),
    )
    snap = replace(snap, threads=threads)
    reader = DictReader(SOURCE)
    # WHEN the lines are read
    out = with_source_lines(snap, reader)
    # THEN every Python location was asked for once, the native one never
    assert reader.asked and set(reader.asked.values()) == {1}
    assert native.location not in reader.asked
    locals_frames = {f.frame.location for t in snap.locals for f in t.frames}
    assert locals_frames <= set(reader.asked)
    # and each is kept once, with its text, or None when it could not be read
    keys = [(s.filename, s.lineno) for s in out.source_lines]
    assert len(keys) == len(set(keys)) == len(reader.asked)
    assert out.line("/srv/shop/shop/db.py", 41) == "        return cur.fetchall()"
    unread = [s for s in out.source_lines if (s.filename, s.lineno) not in SOURCE]
    assert unread and all(s.text is None for s in unread)


def test_with_source_lines_keeps_lines_already_captured() -> None:
    # GIVEN a snapshot whose lines were already read
    snap = incident_snapshot()
    reader = DictReader({})
    # WHEN read again from a reader that knows nothing now
    out = with_source_lines(snap, reader)
    # THEN nothing is read again and the captured lines stay
    assert reader.asked == {} and out.source_lines == snap.source_lines


def test_with_source_lines_walks_only_the_threads_that_changed_since_like() -> None:
    # GIVEN a snapshot given its lines while py-spy read, and the same poll's final snapshot:
    # the same thread objects but one, whose stack gained a new frame (py-spy's GIL holder)
    before = with_source_lines(incident_snapshot(source_lines=()), DictReader(SOURCE))
    assert before.threads is not None
    first, *rest = before.threads.threads
    moved = replace(first, stack=(Frame("/srv/shop/shop/new.py", 7, "fresh"), *first.stack))
    after = replace(
        before, source_lines=(), threads=replace(before.threads, threads=(moved, *rest))
    )
    reader = DictReader(SOURCE)
    # WHEN the final one's lines are read like the first
    out = with_source_lines(after, reader, like=before)
    # THEN only the new location was read (the unchanged threads were not walked again)
    assert set(reader.asked) == {("/srv/shop/shop/new.py", 7)}
    # AND every frame of the final snapshot has its line, as a full walk would give
    full = with_source_lines(after, DictReader(SOURCE))
    assert {(s.filename, s.lineno) for s in full.source_lines} <= {
        (s.filename, s.lineno) for s in out.source_lines
    }
    assert out.line("/srv/shop/shop/db.py", 41) == "        return cur.fetchall()"


@pytest.mark.parametrize(
    ("changes", "source"),
    [
        ({"pyspy_joined": True}, SourceKind.BOTH),
        ({}, SourceKind.AGENT),
        ({"threads_source": SourceKind.PYSPY}, SourceKind.PYSPY),
        ({"source_kind": SourceKind.PYSPY}, SourceKind.PYSPY),
    ],
    ids=["joined", "agent", "pyspy-standing-in", "pyspy-alone"],
)
def test_snapshot_from_update_says_where_threads_came_from(
    changes: Dict[str, Any], source: SourceKind
) -> None:
    # GIVEN an update from one of the sessions
    up = replace(incident_update(), **changes)
    # WHEN captured  THEN its source is where the threads came from
    snap = snapshot_from_update(up)
    assert snap.source is source
    assert snap.taken_at == up.fetched_at and snap.info == up.info
    assert snap.cpinspect == cpinspect.__version__


def test_snapshot_from_update_marks_the_gil_holder_and_keeps_the_link_state() -> None:
    # GIVEN py-spy standing in for a silent agent, GIL holder named only on the update
    up = replace(fallback_update(), warnings=("agent 0.0.9 speaks schema 0",))
    assert up.threads is not None
    assert not any(t.owns_gil for t in up.threads.threads)
    # WHEN captured with routes, locals and a note of its own
    snap = snapshot_from_update(
        up, routes=shop_routes(), locals_=[thread_locals()], notes=("", "by hand")
    )
    # THEN the holder is marked on its thread (only it), and the banner, warnings, note and
    # staleness are kept
    assert snap.threads is not None
    assert [t.ident for t in snap.threads.threads if t.owns_gil] == [GIL_HOLDER]
    assert snap.gil_holder == GIL_HOLDER
    assert snap.notes == (up.message, "agent 0.0.9 speaks schema 0", "by hand")
    assert snap.stale == ("pools",)
    assert snap.routes == shop_routes() and snap.locals == (thread_locals(),)


def test_snapshot_from_update_without_threads() -> None:
    # GIVEN a lost link before any data
    up = update(None, info=None, message="target gone")
    # WHEN captured  THEN an empty snapshot that still says why
    snap = snapshot_from_update(up)
    assert snap.threads is None and snap.pid is None and snap.notes == ("target gone",)
