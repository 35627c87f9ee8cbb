"""Load the agent into a running, unmodified CherryPy process (and remove it again).

How (see ``shared/reference/injection-notes.md`` for the measurements):

1. The agent's files are copied once into ``/tmp/cpinspect-<uid>/lib/<version>-<hash>/``
   (``<uid>`` the target's; the same 0700 directory the agent's socket lives in), as the package
   ``cpinspect_agent_<version>_<hash>``. A directory, once renamed into place, is never modified
   or deleted: the Autoreloader restarts the app when an imported file changes or vanishes.
   Everything is written through ``/proc/<pid>/root`` (the target's mount namespace), owned by
   the target's uid, with ``O_NOFOLLOW`` relative to directory descriptors: no symlink planted
   in a directory the target owns is ever followed.
2. The bootstrap is scheduled on the target's main thread: on Python >= 3.14 by
   ``sys.remote_exec`` called from the target's own interpreter; before, by gdb writing the
   bootstrap text into a fresh mmap-ed page and calling ``Py_AddPendingCall(PyRun_SimpleString,
   page)``.
3. The bootstrap writes a status file; we wait for it, then find the socket among the target's
   file descriptors (``discovery.find_agent``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from cpinspect.agent import bootstrap
from cpinspect.agent.wire import AGENT_VERSION, SOCKET_DIR_NAME
from cpinspect.attach.discovery import AgentEndpoint, check_process, find_agent, shares_our_mounts
from cpinspect.errors import (
    AgentNotFound,
    BootstrapFailed,
    GdbMissing,
    InjectionFailed,
    MainThreadBusy,
    NoSuchProcess,
    NotCherryPy,
    NotPython,
    PermissionDenied,
    RemoteDebugDisabled,
    TargetGone,
)

AGENT_DIR = Path(bootstrap.__file__).resolve().parent
GDB_TIMEOUT = 30.0
"""gdb reads the target's symbols first: ~1 s here, more on a big process."""
PICKUP_TIMEOUT = 5.0
"""How long the main thread gets to run the scheduled bootstrap (it usually takes ~0.1 s)."""
GDB_INSTALL_HINT = (
    "install gdb (Debian/Ubuntu: apt-get install gdb; Fedora: dnf install gdb; "
    "Alpine: apk add gdb) or run the agent in the app (`inspector.on = True`)"
)
Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# --- the agent's files ------------------------------------------------------------------------


def agent_files() -> List[Tuple[str, bytes]]:
    """``(relative path, content)`` of the agent package, sorted: what gets copied."""
    out = []
    for path in sorted(AGENT_DIR.rglob("*.py")):
        rel = path.relative_to(AGENT_DIR)
        if "__pycache__" in rel.parts:
            continue
        out.append((rel.as_posix(), path.read_bytes()))
    return out


def content_hash(files: List[Tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for rel, data in files:
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()[:12]


def package_name(digest: str) -> str:
    return "cpinspect_agent_%s_%s" % (re.sub(r"\W", "_", AGENT_VERSION), digest[:8])


# --- the target's private directory -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    pid: int
    uid: int
    gid: int
    root: str
    """Prefix reaching the target's mount namespace: "" when it is ours, else /proc/<pid>/root."""

    @property
    def private_dir(self) -> str:
        """As the target sees it."""
        return "/tmp/%s-%d" % (SOCKET_DIR_NAME, self.uid)


def describe_target(pid: int) -> Target:
    try:
        st = os.stat("/proc/%d" % pid)
    except FileNotFoundError:
        raise NoSuchProcess("no process with pid %d (it may have exited)" % pid) from None
    root = "/proc/%d/root" % pid
    try:
        same = shares_our_mounts(pid)
    except PermissionError:
        raise PermissionDenied(
            "cannot see the filesystem of pid %d: run as its user or root" % pid
        ) from None
    return Target(pid=pid, uid=st.st_uid, gid=st.st_gid, root="" if same else root)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_owned_dir(name: str, parent_fd: int, target: Target, create: bool) -> int:
    """Open (creating if asked) a 0700 directory owned by the target's uid, never a symlink."""
    if create:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            if os.geteuid() == 0 and target.uid != 0:
                os.chown(name, target.uid, target.gid, dir_fd=parent_fd, follow_symlinks=False)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PermissionDenied(
                "%s is a symlink or not a directory; refusing to use it (remove it)" % name
            ) from None
        if exc.errno == errno.EACCES:
            raise PermissionDenied(
                "cannot enter %s of uid %d: run as that user or root" % (name, target.uid)
            ) from None
        raise
    st = os.fstat(fd)
    if st.st_uid != target.uid or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        raise PermissionDenied(
            "%s belongs to uid %d with mode %o, not to the target's uid %d with 0700; refusing "
            "to use it (remove it)" % (name, st.st_uid, stat.S_IMODE(st.st_mode), target.uid)
        )
    return fd


def open_private_dir(target: Target) -> int:
    """A descriptor on the target's ``/tmp/cpinspect-<uid>``, created the way the agent would."""
    tmp = target.root + "/tmp"
    try:
        tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        raise PermissionDenied(
            "cannot reach %s of pid %d: run as its user or root" % (tmp, target.pid)
        ) from None
    except FileNotFoundError:
        raise TargetGone("process %d exited during injection" % target.pid) from None
    try:
        return _open_owned_dir(os.path.basename(target.private_dir), tmp_fd, target, create=True)
    except PermissionError as exc:
        raise PermissionDenied(
            "cannot create %s for pid %d (%s): run as its user or root"
            % (target.private_dir, target.pid, exc.strerror)
        ) from None
    finally:
        os.close(tmp_fd)


def _write_file(dir_fd: int, name: str, data: bytes, target: Target) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        if os.geteuid() == 0 and target.uid != 0:
            os.fchown(fd, target.uid, target.gid)
        os.write(fd, data)
    finally:
        os.close(fd)


def _mkdir_owned(name: str, parent_fd: int, target: Target) -> int:
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    if os.geteuid() == 0 and target.uid != 0:
        os.fchown(fd, target.uid, target.gid)
    return fd


@dataclass(frozen=True)
class AgentCopy:
    lib_dir: str
    """The directory to put on the target's sys.path (as the target sees it)."""
    package: str
    script: str
    """The bootstrap file, as the target sees it."""


def install_files(target: Target, private_fd: int) -> AgentCopy:
    """Copy the agent once into ``lib/<version>-<hash>/``; an existing copy is used as is."""
    files = agent_files()
    digest = content_hash(files)
    package = package_name(digest)
    version_dir = "%s-%s" % (AGENT_VERSION, digest)
    lib_fd = _open_owned_dir("lib", private_fd, target, create=True)
    try:
        try:
            os.close(os.open(version_dir, _DIR_FLAGS, dir_fd=lib_fd))
        except FileNotFoundError:
            _build_copy(lib_fd, version_dir, package, files, target)
    finally:
        os.close(lib_fd)
    lib_dir = "%s/lib/%s" % (target.private_dir, version_dir)
    return AgentCopy(
        lib_dir=lib_dir, package=package, script="%s/%s/bootstrap.py" % (lib_dir, package)
    )


def _build_copy(
    lib_fd: int, version_dir: str, package: str, files: List[Tuple[str, bytes]], target: Target
) -> None:
    """Write into a temporary directory, then rename it into place (atomic, first one wins)."""
    tmp_name = ".tmp-%s" % secrets.token_hex(6)
    tmp_fd = _mkdir_owned(tmp_name, lib_fd, target)
    try:
        pkg_fd = _mkdir_owned(package, tmp_fd, target)
        dir_fds: Dict[str, int] = {"": pkg_fd}
        try:
            for rel, data in files:
                parent, _, name = rel.rpartition("/")
                if parent not in dir_fds:
                    dir_fds[parent] = _mkdir_owned(parent, pkg_fd, target)
                _write_file(dir_fds[parent], name, data, target)
        finally:
            for fd in dir_fds.values():
                os.close(fd)
    finally:
        os.close(tmp_fd)
    try:
        os.rename(tmp_name, version_dir, src_dir_fd=lib_fd, dst_dir_fd=lib_fd)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        # Another inspector won the race: its copy is identical (same hash). Ours was never
        # imported by anyone, so removing it is safe.
        _remove_tree(lib_fd, tmp_name)


def _remove_tree(parent_fd: int, name: str) -> None:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        for entry in os.listdir(fd):
            st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


# --- which Python ------------------------------------------------------------------------------


def target_python(pid: int, runner: Runner = _run) -> Optional[Tuple[int, int]]:
    """The target's (major, minor): from its executable's or libpython's name, else by asking
    its own interpreter. None when it does not tell."""
    names = []
    try:
        names.append(os.path.basename(os.readlink("/proc/%d/exe" % pid)))
    except OSError:
        pass
    try:
        with open("/proc/%d/maps" % pid) as f:
            names.extend(os.path.basename(line.split()[-1]) for line in f if "libpython" in line)
    except OSError:
        pass
    for name in names:
        m = re.match(r"^(?:lib)?python(\d)\.(\d+)", name)
        if m:
            return int(m.group(1)), int(m.group(2))
    try:
        out = runner(
            [
                "/proc/%d/exe" % pid,
                "-I",
                "-S",
                "-c",
                "import sys; print('%d %d' % sys.version_info[:2])",
            ],
            10.0,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"^(\d) (\d+)$", out.stdout.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


# --- scheduling the bootstrap ------------------------------------------------------------------


GDB_SCRIPT = r"""
# Run by gdb's own Python (any version): schedule the bootstrap on the target's main thread.
# On x86-64 the calls are made by hand (registers saved and restored one by one): gdb 13's
# inferior calls fail on CPUs with AMX ("Couldn't write extended state status: Bad address")
# because they write back the whole XSAVE area. Elsewhere gdb's own inferior calls are used.
import re, struct
import gdb

PAGE = 4096
GENERAL = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
           "r12", "r13", "r14", "r15", "eflags"]
ARGS = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"]


def value(expr):
    return int(gdb.parse_and_eval(expr)) & 0xFFFFFFFFFFFFFFFF


def assign(name, number):
    if number >= 1 << 63:
        number -= 1 << 64
    gdb.execute("set $%s = %d" % (name, number))


def vector_registers():
    for width, kind, count in (("ymm", "v4_int64", 4), ("xmm", "v2_int64", 2)):
        try:
            gdb.parse_and_eval("$%s0.%s[0]" % (width, kind))
        except gdb.error:
            continue
        return ["$%s%d.%s[%d]" % (width, n, kind, i) for n in range(16) for i in range(count)]
    return []


def return_address():
    try:
        return value("(long)&_start")
    except gdb.error:
        pass
    m = re.search(r"Entry point: (0x[0-9a-f]+)", gdb.execute("info files", to_string=True))
    if m is None:
        raise gdb.GdbError("no entry point to return to")
    return int(m.group(1), 16)


def call(function, args, ret):
    thread = gdb.selected_thread()
    saved = dict((name, value("$" + name)) for name in GENERAL)
    rip, orig_rax = value("$rip"), value("$orig_rax")
    vectors = vector_registers()
    saved_vectors = [value(v) for v in vectors]
    sp = ((saved["rsp"] - 8192) & ~0xF) - 8
    gdb.selected_inferior().write_memory(sp, struct.pack("<Q", ret))
    assign("rip", function)  # gdb also sets orig_rax = -1: no syscall restart meanwhile
    assign("rsp", sp)
    assign("rax", 0)
    for reg, arg in zip(ARGS, args):
        assign(reg, arg)
    bp = gdb.Breakpoint("*%d" % ret, internal=True)
    try:
        for _ in range(50):
            gdb.execute("continue", to_string=True)
            thread.switch()
            if value("$rip") == ret:
                break
        else:
            raise gdb.GdbError("the call did not return")
        result = value("$rax")
    finally:
        bp.delete()
        thread.switch()
        assign("rip", rip)
        for name in GENERAL:
            assign(name, saved[name])
        for expr, number in zip(vectors, saved_vectors):
            gdb.execute("set %s = %d" % (expr, number - (1 << 64) if number >= 1 << 63 else number))
        assign("orig_rax", orig_rax)  # last: writing rip reset it
    return result


def main():
    gdb.execute("set confirm off")
    gdb.execute("set pagination off")
    inferior = gdb.selected_inferior()
    main_thread = [t for t in inferior.threads() if t.ptid[1] == inferior.pid]
    if main_thread:
        main_thread[0].switch()
    mmap = value("(long)&mmap")
    pending = value("(long)&Py_AddPendingCall")
    run = value("(long)&PyRun_SimpleString")
    arch = gdb.selected_frame().architecture().name()
    if arch == "i386:x86-64":
        ret = return_address()
        page = call(mmap, [0, PAGE, 3, 0x22, 0xFFFFFFFFFFFFFFFF, 0], ret)
        if page in (0, 0xFFFFFFFFFFFFFFFF):
            raise gdb.GdbError("mmap failed in the target")
        inferior.write_memory(page, TEXT + b"\0")
        result = call(pending, [run, page], ret) & 0xFFFFFFFF
    else:
        page = value("(long)mmap(0, %d, 3, 0x22, -1, 0)" % PAGE)
        inferior.write_memory(page, TEXT + b"\0")
        result = value("(int)Py_AddPendingCall((int(*)(void*))%d, (void*)%d)" % (run, page))
        result &= 0xFFFFFFFF
    print("CPINSPECT-SCHEDULED %d" % (result - (1 << 32) if result >= 1 << 31 else result))


try:
    main()
except gdb.error as exc:
    print("CPINSPECT-ERROR %s" % exc)
"""


def gdb_command(gdb: str, pid: int, script: str) -> List[str]:
    return [gdb, "-p", str(pid), "-batch", "-nx", "-ex", "set confirm off", "-x", script]


def ptrace_hint() -> str:
    scope = None
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        pass
    parts = []
    if scope == "3":
        parts.append("kernel.yama.ptrace_scope is 3: no process may be traced until reboot")
    elif scope in ("1", "2"):
        parts.append(
            "kernel.yama.ptrace_scope is %s: run cpinspect as root (CAP_SYS_PTRACE), or "
            "`sysctl kernel.yama.ptrace_scope=0`" % scope
        )
    else:
        parts.append("run cpinspect as the target's user or as root (CAP_SYS_PTRACE)")
    parts.append("in a container, grant it with --cap-add=SYS_PTRACE")
    return "; ".join(parts)


def parse_gdb(pid: int, proc: subprocess.CompletedProcess[str]) -> None:
    """Raise the error gdb's output means; return when the call was scheduled (``$N = 0``)."""
    out = (proc.stdout or "") + "\n" + (proc.stderr or "")
    if re.search(r"ptrace: No such process|No such process\.", out):
        raise TargetGone("process %d exited during injection" % pid)
    if re.search(r"ptrace: Operation not permitted|Could not attach to process", out):
        raise PermissionDenied("may not trace pid %d (ptrace denied): %s" % (pid, ptrace_hint()))
    if re.search(r'No symbol "(Py_AddPendingCall|PyRun_SimpleString)"', out):
        raise NotPython(
            "pid %d has no Python interpreter gdb can call (no Py_AddPendingCall symbol); "
            "pick a CherryPy server's pid" % pid
        )
    if re.search(r'No symbol "mmap"|No symbol table is loaded', out):
        raise InjectionFailed("gdb found no mmap in pid %d (no libc?): %s" % (pid, _last(out)))
    m = re.search(r"^CPINSPECT-SCHEDULED (-?\d+)\s*$", out, flags=re.M)
    if m is None:
        if "exited" in out or "The program being debugged" in out:
            raise TargetGone("process %d exited during injection" % pid)
        raise InjectionFailed(
            "gdb could not schedule the bootstrap in pid %d: %s" % (pid, _last(out))
        )
    if m.group(1) != "0":
        raise InjectionFailed(
            "Py_AddPendingCall refused in pid %d (its queue is full); try again" % pid
        )


def _last(out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    interesting = [ln for ln in lines if not ln.startswith(("[", "warning: "))]
    return (interesting or lines or ["no output"])[-1][:200]


def schedule_with_gdb(pid: int, text: str, runner: Runner = _run) -> float:
    """Run gdb; return how long it took."""
    gdb = shutil.which("gdb")
    if gdb is None:
        raise GdbMissing("gdb is needed to load the agent into Python < 3.14: " + GDB_INSTALL_HINT)
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w", prefix="cpinspect-gdb-", suffix=".py") as script:
        script.write("TEXT = bytes.fromhex(%r)\n" % text.encode().hex())
        script.write(GDB_SCRIPT)
        script.flush()
        try:
            proc = runner(gdb_command(gdb, pid, script.name), GDB_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise InjectionFailed(
                "gdb did not finish within %.0f s attaching to pid %d" % (GDB_TIMEOUT, pid)
            ) from None
    parse_gdb(pid, proc)
    return time.monotonic() - started


def remote_debug_disabled(pid: int) -> bool:
    """PEP 768's off switches, as far as they show from outside."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        env = []
    for item in env:
        if item.startswith(b"PYTHON_DISABLE_REMOTE_DEBUG=") and item.split(b"=", 1)[1]:
            return True
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        argv = []
    return any(a.endswith(b"disable_remote_debug") for a in argv)


REMOTE_DEBUG_HINT = (
    "unset PYTHON_DISABLE_REMOTE_DEBUG / drop -X disable_remote_debug and restart it, or run "
    "the agent in the app (`inspector.on = True`)"
)


def schedule_with_remote_exec(pid: int, script_path: str, runner: Runner = _run) -> float:
    """Python >= 3.14: the target's own interpreter calls ``sys.remote_exec`` (same version)."""
    if remote_debug_disabled(pid):
        raise RemoteDebugDisabled(
            "remote debugging is disabled in pid %d: %s" % (pid, REMOTE_DEBUG_HINT)
        )
    code = "import sys; sys.remote_exec(%d, %r)" % (pid, script_path)
    started = time.monotonic()
    try:
        proc = runner(["/proc/%d/exe" % pid, "-I", "-S", "-c", code], GDB_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise InjectionFailed(
            "sys.remote_exec did not return within %.0f s" % GDB_TIMEOUT
        ) from None
    except FileNotFoundError:
        raise TargetGone("process %d exited during injection" % pid) from None
    if proc.returncode != 0:
        err = _last(proc.stderr or proc.stdout or "")
        if "remote debugging" in err.lower() and (
            "disabled" in err.lower() or "not enabled" in err.lower()
        ):
            raise RemoteDebugDisabled(
                "remote debugging is disabled in pid %d: %s" % (pid, REMOTE_DEBUG_HINT)
            )
        if "Operation not permitted" in err or "PermissionError" in err:
            raise PermissionDenied(
                "may not trace pid %d (ptrace denied): %s" % (pid, ptrace_hint())
            )
        if "ProcessLookupError" in err or "No such process" in err:
            raise TargetGone("process %d exited during injection" % pid)
        raise InjectionFailed("sys.remote_exec failed for pid %d: %s" % (pid, err))
    return time.monotonic() - started


# --- the whole thing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InjectResult:
    endpoint: Optional[AgentEndpoint]
    """The agent (None after an uninstall)."""
    already: bool
    """The agent was there before: nothing was done."""
    schedule_seconds: float
    """gdb's (or sys.remote_exec's) wall time."""
    total_seconds: float
    status: Dict[str, Any]


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _read_status(private_fd: int, name: str) -> Optional[Dict[str, Any]]:
    import json

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=private_fd)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Injector:
    """One injection (or removal). The pieces that touch the machine can be swapped in tests."""

    def __init__(
        self,
        pid: int,
        runner: Runner = _run,
        pickup_timeout: float = PICKUP_TIMEOUT,
        python: Optional[Tuple[int, int]] = None,
    ) -> None:
        self.pid = pid
        self.runner = runner
        self.pickup_timeout = pickup_timeout
        self.python = python

    def inject(self) -> InjectResult:
        """Load the agent and return its endpoint; a no-op when one is already there."""
        started = time.monotonic()
        check_process(self.pid)
        try:
            endpoint = find_agent(self.pid)
        except AgentNotFound:
            pass
        else:
            if _is_socket(endpoint.connect_path):
                return InjectResult(endpoint, True, 0.0, time.monotonic() - started, {})
            # The agent listens but its socket file was removed or replaced (a tmp cleaner):
            # the bootstrap asks the running agent to bind it again.
        status, seconds = self._run_bootstrap("install")
        if not status.get("ok"):
            self._raise_for(status)
        endpoint = self._wait_for_socket()
        return InjectResult(
            endpoint, bool(status.get("already")), seconds, time.monotonic() - started, status
        )

    def detach(self) -> InjectResult:
        """Uninstall every agent in the target (hooks, threads, socket); the files stay."""
        started = time.monotonic()
        check_process(self.pid)
        find_agent(self.pid)  # AgentNotFound: nothing to detach, and it says so
        status, seconds = self._run_bootstrap("uninstall")
        if not status.get("ok"):
            self._raise_for(status)
        return InjectResult(None, False, seconds, time.monotonic() - started, status)

    def _run_bootstrap(self, action: str) -> Tuple[Dict[str, Any], float]:
        target = describe_target(self.pid)
        python = self.python or target_python(self.pid, self.runner)
        private_fd = open_private_dir(target)
        try:
            copy = install_files(target, private_fd)
            nonce = "inject-%d-%s" % (self.pid, secrets.token_hex(4))
            status_name = nonce + ".json"
            args = (copy.lib_dir, copy.package, "%s/%s" % (target.private_dir, status_name), action)
            text = bootstrap.bootstrap_text(copy.script, args)
            if python is not None and python >= (3, 14):
                # remote_exec runs a file, which must exist when the target gets to it: it stays
                # until the status file shows it ran (or forever, if it never does).
                script_name = nonce + ".py"
                _write_file(private_fd, script_name, text.encode(), target)
                seconds = schedule_with_remote_exec(
                    self.pid, "%s/%s" % (target.private_dir, script_name), self.runner
                )
            else:
                seconds = schedule_with_gdb(self.pid, text, self.runner)
            status = self._wait_for_status(private_fd, status_name)
            for done in (status_name, nonce + ".py"):
                try:
                    os.unlink(done, dir_fd=private_fd)
                except OSError:
                    pass
            return status, seconds
        finally:
            os.close(private_fd)

    def _wait_for_status(self, private_fd: int, name: str) -> Dict[str, Any]:
        deadline = time.monotonic() + self.pickup_timeout
        while True:
            status = _read_status(private_fd, name)
            if status is not None:
                return status
            if not _alive(self.pid):
                raise TargetGone("process %d exited during injection" % self.pid)
            if time.monotonic() >= deadline:
                raise MainThreadBusy(
                    "pid %d's main thread has not run the scheduled bootstrap in %.0f s: it is "
                    "stuck in a C call, or another thread holds the GIL. The agent loads by itself "
                    "when it gets back to Python code (harmless if that never happens); retry "
                    "later, or read it without the agent: `cpinspect attach %d`"
                    % (self.pid, self.pickup_timeout, self.pid)
                )
            time.sleep(0.02)

    def _wait_for_socket(self) -> AgentEndpoint:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                return find_agent(self.pid)
            except AgentNotFound:
                if time.monotonic() >= deadline:
                    raise
            except NoSuchProcess:
                raise TargetGone("process %d exited during injection" % self.pid) from None
            time.sleep(0.02)

    def _raise_for(self, status: Dict[str, Any]) -> None:
        kind = status.get("kind")
        message = str(status.get("error") or "no reason given")
        if kind == "no-cherrypy":
            raise NotCherryPy(
                "pid %d runs Python but has not imported cherrypy: %s; pick a CherryPy "
                "server's pid (`cpinspect ps`)" % (self.pid, message)
            )
        if kind == "not-ready":
            raise InjectionFailed("pid %d is still starting: %s" % (self.pid, message))
        raise BootstrapFailed(
            "the agent's bootstrap failed inside pid %d (Python %s): %s"
            % (self.pid, status.get("python", "?"), message)
        )


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def inject(pid: int, pickup_timeout: float = PICKUP_TIMEOUT) -> InjectResult:
    return Injector(pid, pickup_timeout=pickup_timeout).inject()


def detach(pid: int, pickup_timeout: float = PICKUP_TIMEOUT) -> InjectResult:
    return Injector(pid, pickup_timeout=pickup_timeout).detach()
