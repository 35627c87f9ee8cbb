"""Faults on real processes: the inspector says what happened in one line, keeps its last data,
and recovers when the cause goes away (issue 14).

Killed targets (between polls, mid-poll, under the TUI), stopped targets (SIGSTOP/SIGCONT), the
agent's socket file removed or replaced, socket directories that are symlinks, a full disk under a
snapshot, and py-spy killed while it holds the target paused. The snapshot CLI's own mid-series
kill is tested in test_snapshot_cli.py; restarts found by command line and port in
test_reconnect.py.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import psutil
import pytest

from cpinspect.attach.discovery import find_agent
from cpinspect.errors import (
    AgentNotFound,
    SnapshotWriteError,
    StaleSocket,
)
from cpinspect.model import SourceKind
from cpinspect.snapshots import read_snapshots, snapshot_from_update, write_snapshots
from cpinspect.sources.agent import AgentSource
from cpinspect.sources.base import LinkState, Update
from cpinspect.sources.live import AgentSession
from cpinspect.sources.pyspy import PySpySource, process_state
from cpinspect.sources.source_lines import SourceLines
from cpinspect.tui.app import InspectorApp
from cpinspect.tui.widgets.banner import Banner
from cpinspect.tui.widgets.threads_table import ThreadsTable
from tests.conftest import IN_CI, ROOT, TargetProcess, wait_for
from tests.helpers import BackgroundRequests, agent_get, assert_left_stopped, run_cli
from tests.integration.test_reconnect import free_port
from tests.tui.helpers import wait_until

KILLED = "the target closed the agent's socket (it exited or restarted) — showing the last data"


def session_on(target: TargetProcess, pyspy: bool = True) -> AgentSession:
    """A live session as ``cpinspect attach PID`` opens it: the agent, py-spy beside it."""
    source = AgentSource(find_agent(target.pid).connect_path, timeout=1.0)
    spy = PySpySource(target.pid) if pyspy else None
    return AgentSession(source, source.info(), pid=target.pid, pyspy=spy)


def one_line(text: str) -> str:
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


def running(pid: int) -> bool:
    """Neither stopped (T) nor held by a tracer (t)."""
    return process_state(pid) in ("R", "S", "D")


def held_request(target: TargetProcess) -> BackgroundRequests:
    """One worker held in /block, seen by the agent (so the data kept has a request in it)."""
    blocked = BackgroundRequests(target.port, "/block?seconds=60", 1)

    def held() -> bool:
        _, body = agent_get(target.socket_path(), "/v1/threads")
        return any((t.get("request") or {}).get("path") == "/block" for t in body["threads"])

    wait_for(held, timeout=15, what="a worker in /block")
    return blocked


# --- 1. SIGKILL ------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["between polls", "during a poll"])
def test_target_killed_keeps_the_last_data_in_one_line(spawn_target, when):
    # GIVEN a live session (agent + py-spy) that has one reading
    target = spawn_target()
    session = session_on(target)
    live = session.poll()
    assert live.state is LinkState.LIVE and live.threads is not None
    try:
        if when == "between polls":
            # WHEN the target is killed between two polls
            target.proc.kill()
            target.proc.wait(5)
            lost = session.poll()
        else:
            # WHEN it is killed while a poll waits for the agent (stopped first so that the
            # poll is surely in flight: the agent's answer cannot come)
            os.kill(target.pid, signal.SIGSTOP)
            result: List[Update] = []
            poller = threading.Thread(target=lambda: result.append(session.poll()))
            poller.start()
            time.sleep(0.3)  # inside the 1 s the poll waits for the agent
            assert poller.is_alive()
            target.proc.kill()
            target.proc.wait(5)
            poller.join(10)
            [lost] = result
        # THEN one line says the target went, and the last reading is what is shown
        assert lost.state is LinkState.LOST
        assert one_line(lost.message).startswith(KILLED), lost.message
        assert lost.threads is live.threads and lost.info is live.info
        # AND it keeps saying so while it looks for the service
        again = session.poll()
        assert again.state is LinkState.LOST and again.threads is live.threads
    finally:
        session.close()


async def test_the_tui_keeps_the_rows_of_a_killed_target_and_follows_its_restart(
    spawn_target,
):
    # GIVEN the TUI on a real target on a fixed port, one worker held in /block
    port = free_port()
    first = spawn_target("--port", str(port))
    held_request(first)
    session = session_on(first, pyspy=False)
    app = InspectorApp(session, interval=0.3, source_lines=SourceLines(first.pid), clock=time.time)
    async with app.run_test(size=(120, 34)) as pilot:
        table = app.query_one(ThreadsTable)
        banner = app.query_one(Banner)

        def requests() -> List[str]:
            return [table.cell_text(r, "request") for r in range(len(table.row_keys))]

        await wait_until(
            pilot, lambda: any("/block" in r for r in requests()), 15, "the /block row"
        )
        rows = requests()
        # WHEN the target is killed (SIGKILL: no goodbye on the socket)
        first.proc.kill()
        first.proc.wait(5)
        # THEN the banner says it in one line and the table keeps the rows it had
        await wait_until(pilot, lambda: KILLED in banner.plain, 10, "the lost banner")
        assert banner.has_class("-error")
        assert len(banner.plain.splitlines()) == 1, banner.plain
        assert requests() == rows
        # WHEN the same service starts again (same command line, same port)
        second = spawn_target("--port", str(port))
        # THEN the banner says which pid it reconnected to, and the table is live again
        await wait_until(
            pilot,
            lambda: "reconnected to pid %d" % second.pid in banner.plain,
            20,
            "the reconnected banner",
        )
        assert "pid %d is gone" % first.pid in banner.plain
        await wait_until(
            pilot, lambda: not any("/block" in r for r in requests()), 10, "the new rows"
        )
    session.close()


# --- 2. SIGSTOP / SIGCONT --------------------------------------------------------------------


def stopped_line(pid: int) -> str:
    return (
        "pid %d is stopped (state T: SIGSTOP or Ctrl-Z), so its agent cannot answer; "
        "continue it with `kill -CONT %d`" % (pid, pid)
    )


@pytest.fixture
def stoppable(spawn_target) -> Iterator[TargetProcess]:
    """A target that is always continued after the test, whatever happened."""
    target = spawn_target()
    try:
        yield target
    finally:
        if target.proc.poll() is None:
            os.kill(target.pid, signal.SIGCONT)


def test_stopped_target_is_read_by_pyspy_without_resuming_it(stoppable):
    # GIVEN a live session with py-spy beside the agent
    target = stoppable
    session = session_on(target)
    live = session.poll()
    assert live.state is LinkState.LIVE and live.pyspy_joined
    try:
        # WHEN the target is stopped (SIGSTOP)
        os.kill(target.pid, signal.SIGSTOP)
        wait_for(lambda: process_state(target.pid) == "T", what="state T")
        stopped = session.poll()
        # THEN one line says it is stopped, not stuck; py-spy --nonblocking still reads its
        # threads (memory reads need no running process) and the pool numbers are kept
        assert one_line(stopped.message) == (
            stopped_line(target.pid) + "; threads from py-spy, pool numbers from before"
        )
        assert stopped.effective_threads_source is SourceKind.PYSPY
        assert stopped.threads is not None and stopped.threads.pools == live.threads.pools
        # AND cpinspect did not continue it: stopping is the user's call
        assert process_state(target.pid) == "T"
        # WHEN it is continued
        os.kill(target.pid, signal.SIGCONT)
        back = session.poll()
        # THEN the agent answers again, and says so
        assert back.state is LinkState.RECONNECTED and back.message == "agent answering again"
        assert back.effective_threads_source is SourceKind.AGENT
        assert running(target.pid)
    finally:
        session.close()


def test_stopped_target_without_pyspy_is_lost_in_one_line_and_comes_back(stoppable):
    target = stoppable
    session = session_on(target, pyspy=False)
    live = session.poll()
    try:
        os.kill(target.pid, signal.SIGSTOP)
        wait_for(lambda: process_state(target.pid) == "T", what="state T")
        lost = session.poll()
        assert lost.state is LinkState.LOST
        assert one_line(lost.message).startswith(
            stopped_line(target.pid) + " — showing the last data (from "
        ), lost.message
        assert lost.threads is live.threads
        os.kill(target.pid, signal.SIGCONT)
        assert session.poll().state is LinkState.RECONNECTED
        assert running(target.pid)
    finally:
        session.close()


def test_native_frames_on_a_stopped_target_say_why_and_never_resume_it(stoppable):
    # GIVEN native frames on (py-spy in blocking mode: it must pause the process itself)
    target = stoppable
    session = session_on(target)
    session.set_native(True)
    assert session.poll().pyspy_joined
    try:
        # WHEN the user stops the target
        os.kill(target.pid, signal.SIGSTOP)
        wait_for(lambda: process_state(target.pid) == "T", what="state T")
        update = session.poll()
        # THEN py-spy's failure is one line that says what to do, and the target stays stopped
        note = [w for w in update.warnings if w.startswith("py-spy failed this time")]
        assert note == [
            "py-spy failed this time: pid %d is stopped (state T) and py-spy cannot pause it "
            "for native frames: resume it (`kill -CONT %d`) or turn native frames off"
            % (target.pid, target.pid)
        ], update.warnings
        assert_left_stopped(target.pid)
        # WHEN it is continued, the next poll has py-spy's native frames again
        os.kill(target.pid, signal.SIGCONT)
        back = session.poll()
        assert back.pyspy_joined and not back.warnings
        assert running(target.pid)
    finally:
        session.close()


def test_dump_of_a_stopped_target_says_it_is_stopped_and_leaves_it_so(stoppable):
    target = stoppable
    os.kill(target.pid, signal.SIGSTOP)
    wait_for(lambda: process_state(target.pid) == "T", what="state T")
    result = run_cli("dump", str(target.pid), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    # (and says what py-spy's threads lack: the agent never answered this dump)
    assert result.stderr.splitlines() == [
        "note: %s; threads from py-spy; no requests or pool numbers (the agent has not "
        "answered yet)" % stopped_line(target.pid)
    ]
    assert "CP Server Thread-" in result.stdout
    assert process_state(target.pid) == "T"


# --- 3. The agent's socket file removed or replaced -----------------------------------------


def reload_hint(pid: int) -> str:
    return "reload the agent: `cpinspect inject %d` binds its socket again" % pid


def test_socket_removed_or_replaced_says_so_and_recovers_when_the_agent_is_reloaded(
    spawn_target,
):
    # GIVEN a live session on a target, and its agent's socket path
    target = spawn_target()
    path = find_agent(target.pid).connect_path
    session = session_on(target, pyspy=False)
    session.poll()
    decoy: Optional[socket.socket] = None
    try:
        # WHEN the socket file is removed (a tmp cleaner, a careless `rm`)
        os.unlink(path)
        # THEN the session goes on over the connection it holds
        live = session.poll()
        assert live.state is LinkState.LIVE
        # WHEN that connection ends (httpx drops idle connections after 5 s: a paused TUI)
        time.sleep(5.5)
        removed = session.poll()
        # THEN one line says the file went while the process runs, and how to get it back
        assert removed.state is LinkState.LOST and removed.threads is live.threads
        head = "the agent's socket %s was removed while pid %d still runs; %s" % (
            path,
            target.pid,
            reload_hint(target.pid),
        )
        assert one_line(removed.message).startswith(head), removed.message
        # AND a new inspector says the same, with its exit code, instead of "no such socket"
        dump = run_cli("dump", str(target.pid), stdin=subprocess.DEVNULL)
        assert dump.returncode == StaleSocket.exit_code, dump.stderr
        assert dump.stderr.splitlines() == ["cpinspect: " + head + " (or restart the app)"]

        # WHEN a plain file takes its place
        Path(path).write_text("not a socket")
        replaced = session.poll()
        assert one_line(replaced.message).startswith(
            "the agent's socket %s was replaced by something that is not a socket while "
            "pid %d still runs" % (path, target.pid)
        ), replaced.message
        assert replaced.threads is live.threads

        # WHEN another process's socket takes its place (here: ours, listening, silent)
        os.unlink(path)
        decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        decoy.bind(path)
        decoy.listen(64)
        impostor = session.poll()
        # THEN it is named as another process, not taken for a stuck interpreter
        assert one_line(impostor.message).startswith(
            "the agent's socket %s now leads to another process (pid %d) while pid %d still "
            "runs" % (path, os.getpid(), target.pid)
        ), impostor.message
        dump = run_cli("dump", str(target.pid), stdin=subprocess.DEVNULL)
        assert dump.returncode == StaleSocket.exit_code, dump.stderr
        assert "now leads to another process (pid %d)" % os.getpid() in dump.stderr
        decoy.setblocking(False)
        # nothing was sent to it: the inspector only asked the kernel who listens there
        while True:
            try:
                conn, _ = decoy.accept()
            except BlockingIOError:
                break
            conn.settimeout(2)
            assert conn.recv(100) == b""
            conn.close()
        decoy.close()
        decoy = None

        # WHEN the agent is reloaded as the line says: inject alone, the agent still installed
        os.unlink(path)
        done = run_cli("inject", str(target.pid), stdin=subprocess.DEVNULL, timeout=60)
        assert done.returncode == 0, done.stderr
        # THEN a fresh socket is bound at the same path (not the gone one reported back)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        # THEN the session reconnects to the same pid by itself
        back = wait_for(
            lambda: (lambda u: u if u.state is LinkState.RECONNECTED else None)(session.poll()),
            timeout=15,
            what="reconnection after the reload",
        )
        assert back.message.startswith("reconnected to pid %d" % target.pid), back.message
        assert session.poll().state is LinkState.LIVE
    finally:
        if decoy is not None:
            decoy.close()
        session.close()


# --- 4. Socket directories that are symlinks -------------------------------------------------

INSTALL_INTO = """
import sys
import cherrypy
import cpinspect.agent
from cpinspect.agent.paths import SocketPathError
try:
    cpinspect.agent.install(sys.argv[1] if len(sys.argv) > 1 else None)
except SocketPathError as exc:
    print("refused:", exc)
else:
    print("bound")
"""


def test_the_agent_refuses_to_bind_into_a_symlinked_directory(spawn_target, short_tmp):
    # GIVEN a private directory, a symlink to it, and $XDG_RUNTIME_DIR/cpinspect a symlink too
    real = short_tmp / "real"
    real.mkdir(mode=0o700)
    link = short_tmp / "link"
    link.symlink_to(real)
    xdg = short_tmp / "xdg"
    xdg.mkdir(mode=0o700)
    (xdg / "cpinspect").symlink_to(real)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XDG_RUNTIME_DIR", None)

    def install(*args: str, xdg_dir: Optional[Path] = None) -> str:
        run_env = dict(env, XDG_RUNTIME_DIR=str(xdg_dir)) if xdg_dir is not None else env
        done = subprocess.run(
            [sys.executable, "-c", INSTALL_INTO, *args],
            capture_output=True,
            text=True,
            env=run_env,
            cwd=str(ROOT),
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    # WHEN install() is given a socket in the symlinked directory
    # THEN it refuses, naming the link and the real directory
    assert install(str(link / "a.sock")) == (
        "refused: %s is a symlink (to %s); refusing to bind the agent's socket through it: "
        "put inspector.socket in the real directory" % (link, real)
    )
    # WHEN the default directory is a symlink: refused too
    assert install(xdg_dir=xdg) == (
        "refused: %s is a symlink; refusing to use it (remove it)" % (xdg / "cpinspect")
    )
    # AND through the config (inspector.socket), the app still starts, with no agent
    target = spawn_target("--socket", str(link / "a.sock"))
    with pytest.raises(AgentNotFound):
        find_agent(target.pid)
    # nothing was bound anywhere through the links
    assert list(real.iterdir()) == []


def test_the_inspector_does_not_talk_to_what_a_swapped_socket_directory_leads_to(
    spawn_target, short_tmp
):
    # GIVEN a target whose agent socket lives in a directory it owns
    own = short_tmp / "own"
    own.mkdir(mode=0o700)
    target = spawn_target("--socket", str(own / "agent.sock"))
    assert find_agent(target.pid).connect_path == str(own / "agent.sock")
    # WHEN the directory is swapped for a symlink to a place holding another process's socket
    decoy_dir = short_tmp / "elsewhere"
    decoy_dir.mkdir()
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        decoy.bind(str(decoy_dir / "agent.sock"))
        decoy.listen(64)
        own.rename(short_tmp / "moved")
        own.symlink_to(decoy_dir)
        # THEN the inspector refuses in one line, naming the process that listens there
        result = run_cli("dump", str(target.pid), stdin=subprocess.DEVNULL)
        assert result.returncode == StaleSocket.exit_code, result.stderr
        [line] = result.stderr.splitlines()
        assert "now leads to another process (pid %d)" % os.getpid() in line
        # AND it sent that socket nothing
        decoy.setblocking(False)
        accepted = 0
        while True:
            try:
                conn, _ = decoy.accept()
            except BlockingIOError:
                break
            accepted += 1
            conn.settimeout(2)
            assert conn.recv(100) == b""
            conn.close()
        assert accepted >= 1  # it did ask the kernel who listens there
    finally:
        decoy.close()


# --- 5. The disk full under a snapshot -------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only), unmounted after."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root; mounting a tmpfs needs it")
        pytest.skip("needs root to mount a 64 KiB tmpfs")
    where = tmp_path / "tiny"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_write_snapshots_on_a_full_disk_fails_in_one_line_and_leaves_nothing(spawn_target, tiny_fs):
    # GIVEN readings of a real target, too big together for the 64 KiB filesystem
    target = spawn_target("--threads", "20")
    session = session_on(target, pyspy=False)
    try:
        readings = [snapshot_from_update(session.poll()) for _ in range(3)]
    finally:
        session.close()
    series = readings * 4
    # WHEN they are written there
    with pytest.raises(SnapshotWriteError) as caught:
        write_snapshots(series, tiny_fs)
    # THEN one line says there is no space, and nothing is left behind, not even hidden
    assert one_line(str(caught.value)) == (
        "cannot save the snapshot in %s: No space left on device (free some space, or "
        "choose another directory)" % tiny_fs
    )
    assert os.listdir(tiny_fs) == []

    # WHEN the JSON fits and its report does not (the disk filled up to the JSON's size)
    one = readings[:1]
    probe = write_snapshots(one, tiny_fs, report=False).json_path
    json_pages = -(-probe.stat().st_size // 4096)
    probe.unlink()
    filler = tiny_fs / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * ((16 - json_pages) * 4096))
            f.flush()
        except OSError:
            pass
    with pytest.raises(SnapshotWriteError, match="No space left on device"):
        write_snapshots(one, tiny_fs)
    # THEN the JSON already written is taken away with its report: no half capture
    assert os.listdir(tiny_fs) == ["filler"]
    # AND once there is room again the same capture is saved and reads back
    filler.unlink()
    written = write_snapshots(one, tiny_fs)
    assert len(read_snapshots(written.json_path)) == 1


def test_snapshot_cli_on_a_full_disk_exits_21_with_one_line(spawn_target, tiny_fs):
    target = spawn_target("--threads", "20")
    result = run_cli(
        "snapshot",
        str(target.pid),
        "-o",
        str(tiny_fs),
        "--count",
        "6",
        "--every",
        "0.1",
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == SnapshotWriteError.exit_code, result.stderr
    assert result.stdout == ""
    last = result.stderr.splitlines()[-1]
    assert last == (
        "cpinspect: cannot save the snapshot in %s: No space left on device (free some space, "
        "or choose another directory)" % tiny_fs
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tiny_fs) == []


# --- 6. py-spy killed while it holds the target paused ---------------------------------------


def test_pyspy_killed_mid_dump_never_leaves_the_target_stopped(spawn_target):
    # GIVEN native frames on: py-spy pauses the target (ptrace) for each dump
    target = spawn_target("--threads", "40")
    session = session_on(target)
    session.set_native(True)
    assert session.poll().pyspy_joined
    me = psutil.Process()
    caught = False
    try:
        deadline = time.monotonic() + 20
        while not caught and time.monotonic() < deadline:
            result: List[Update] = []
            poller = threading.Thread(target=lambda r=result: r.append(session.poll()))
            poller.start()
            # WHEN py-spy is SIGKILLed while the target is paused under it
            while poller.is_alive() and not caught:
                spies = [c for c in me.children(recursive=True) if c.name() == "py-spy"]
                if spies and process_state(target.pid) in ("t", "T"):
                    spies[0].kill()
                    caught = True
            poller.join(15)
            if not caught:
                continue
            [update] = result
            # THEN the target runs again, the poll still shows the agent's data, and one line
            # says py-spy failed this time
            wait_for(lambda: running(target.pid), timeout=5, what="the target running")
            assert update.state is LinkState.LIVE and update.threads is not None
            assert [w for w in update.warnings if "py-spy" in w] == [
                "py-spy failed this time: py-spy was killed by signal 9 while reading pid %d"
                % target.pid
            ]
        assert caught, "py-spy never caught with the target paused within 20 s"
        # AND the next poll has py-spy's native frames again
        after = session.poll()
        assert after.pyspy_joined and not after.warnings
        assert any(f.native for t in after.threads.threads for f in t.stack)
        assert running(target.pid)
    finally:
        session.close()
