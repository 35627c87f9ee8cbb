"""``cpinspect dump --json`` of two trees on ONE target, interleaved, beside ``py-spy dump``.

    python bench/dump_side_by_side.py --old /tmp/old-tree [--threads 1000] [--busy 500]
                                      [--spin 0] [--no-agent] [--rounds 5]

The machine is shared and noisy, so a dump's wall time is only comparable with another's taken
on the same target minutes apart at most. This starts ``bench_server.py`` (pool ``--threads``,
``--busy`` requests held in ``/sleep``, ``--spin`` of them spinning in ``/spin``; with the agent
unless ``--no-agent``), then runs, round after round, ``python -m cpinspect dump --json PID``
from the tree at ``--old`` (``git -C /work/main archive COMMIT | tar -x -C /tmp/old-tree``) and
from this checkout, and ``py-spy dump --json --nonblocking`` (with ``--locals`` under
``--no-agent``: the read the inspector makes there). Each run's wall time, the medians and
new/old, new/py-spy are printed.

Bytecode is written and used for both trees (a first untimed run of each writes it), as an
installed package has it; ``PYTHONDONTWRITEBYTECODE`` in the environment would otherwise make
every run compile its imports (~0.5 s on this machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, median, open_requests, start_ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="another tree of cpinspect, to compare")
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=500)
    parser.add_argument("--spin", type=int, default=0, help="of the busy, how many spin")
    parser.add_argument("--no-agent", action="store_true", help="a target without the agent")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    argv = [str(ROOT / "bench" / "bench_server.py"), "--threads", str(args.threads)]
    if not args.no_agent:
        argv.append("--agent")
    server = start_ready(argv, "bench server", timeout=60)
    held = open_requests(server.port, "/sleep?s=900", args.busy - args.spin)
    held += open_requests(server.port, "/spin?s=900", args.spin)
    try:
        proc = psutil.Process(server.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.num_threads() < args.threads:
            time.sleep(0.2)
        time.sleep(3.0)  # the held requests reach their handlers
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        pyspy = str(Path(sys.executable).parent / "py-spy")
        commands = {
            "old": (
                [sys.executable, "-m", "cpinspect", "dump", "--json", str(server.pid)],
                args.old,
            ),
            "new": (
                [sys.executable, "-m", "cpinspect", "dump", "--json", str(server.pid)],
                str(ROOT),
            ),
            "py-spy": (
                [pyspy, "dump", "--pid", str(server.pid), "--json", "--nonblocking"]
                + (["--locals"] if args.no_agent else []),
                str(ROOT),
            ),
        }
        for name in ("old", "new"):  # bytecode written, untimed
            command, cwd = commands[name]
            subprocess.run(command, cwd=cwd, env=env, capture_output=True)
        took: Dict[str, List[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (command, cwd) in commands.items():
                began = time.monotonic()
                done = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
                took[name].append(time.monotonic() - began)
                if done.returncode != 0:
                    print("%s failed: %s" % (name, done.stderr.decode()[-300:]), file=sys.stderr)
                    return 1
        shape = "%d threads, %d busy, %d spinning, %s" % (
            args.threads,
            args.busy,
            args.spin,
            "no agent" if args.no_agent else "agent",
        )
        print(shape)
        for name, values in took.items():
            print(
                "  %-7s %s   median %.2f s"
                % (name, " ".join("%.2f" % v for v in values), median(values))
            )
        m = {name: median(values) for name, values in took.items()}
        print("  new/old %.2fx   new/py-spy %.2fx" % (m["new"] / m["old"], m["new"] / m["py-spy"]))
    finally:
        for sock in held:
            sock.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
