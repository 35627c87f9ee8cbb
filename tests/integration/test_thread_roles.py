"""Each thread of a real CherryPy process gets the role it has, from the agent and from py-spy.

cheroot (8.5+) starts, beside the acceptor (``HTTPServer Thread-N``, which accepts connections
and queues them), a thread running ``HTTPServer._serve_unservicable``: it answers ``503 Service
Unavailable`` to the connections the pool's full queue cannot take. Both paths called it an
acceptor; it is the ``overflow`` thread.
"""

from __future__ import annotations

from typing import Callable

from cpinspect.model import Role
from cpinspect.sources.pyspy import PySpySource
from tests.conftest import TargetProcess
from tests.helpers import agent_get, run_cli


def test_the_503_thread_is_overflow_and_the_acceptor_an_acceptor(
    spawn_target: Callable[..., TargetProcess],
) -> None:
    # GIVEN a CherryPy app served by cheroot, with the agent
    target = spawn_target()
    # WHEN the agent names its threads' roles
    status, body = agent_get(target.socket_path(), "/v1/threads")
    assert status == 200, body
    roles = {t["name"]: t["role"] for t in body["threads"]}
    (overflow,) = [name for name in roles if "_serve_unservicable" in name]
    # THEN the thread serving the 503s is "overflow", the one accepting is the acceptor
    assert roles[overflow] == "overflow"
    assert [r for name, r in roles.items() if name.startswith("HTTPServer ")] == ["acceptor"]
    # AND py-spy, reading the process from outside, says the same of both
    snap = PySpySource(target.pid).threads()
    by_name = {t.name: t.role for t in snap.threads}
    assert by_name[overflow] is Role.OVERFLOW
    assert [r for name, r in by_name.items() if name.startswith("HTTPServer ")] == [Role.ACCEPTOR]
    # AND the dump labels it so
    dump = run_cli("dump", str(target.pid))
    assert dump.returncode == 0, dump.stderr
    assert '"%s" (overflow' % overflow in dump.stdout
