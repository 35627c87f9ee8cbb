"""Install/uninstall cycles leave at most the last agent behind (inject/detach soak: each cycle
used to keep its whole agent alive through the bus's priority table, ~6.7 KiB a cycle)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_twenty_install_uninstall_cycles_keep_at_most_one_agent_alive(tmp_path):
    # GIVEN a fresh interpreter with CherryPy and the agent (no other test's agents in it)
    code = textwrap.dedent(
        """
        import gc, os, sys, cherrypy
        import cpinspect.agent.plugin as plugin
        where = sys.argv[1]
        # WHEN the agent is installed and uninstalled twenty times
        for _ in range(20):
            plugin.install(os.path.join(where, "a.sock"))
            plugin.uninstall()
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if type(o) is plugin.Agent)
        stale = sum(
            1
            for _, cb in cherrypy.engine._priorities
            if type(getattr(cb, "__self__", None)).__name__ == "InspectorPlugin"
        )
        print(alive, stale)
        """
    )
    os.chmod(tmp_path, 0o700)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    alive, stale = (int(n) for n in done.stdout.split())
    # THEN at most the last one is still referenced (by its two priority entries), not twenty
    assert alive <= 1 and stale <= 2, (alive, stale)
