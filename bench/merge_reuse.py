"""py-spy's carried join after a new agent answer, old tree against this one (issue 13).

    python bench/tui_side_by_side.py --record FILE --spin 100   # real updates, pickled
    python bench/merge_reuse.py FILE --old /tmp/old-tree

From the recorded updates: the agent's answer, py-spy's carried threads, then the agent's next
answer as a delta brings it (every busy thread a new object, its elapsed moved on:
``protocol._carried``) and py-spy's next reading of the same thread objects. Prints, for each
tree's ``merge.fallback_threads`` with its memo, the stacks joined again (``_restack`` calls)
and the CPU time of that join (best of 15), and checks the result equals a join without memo.
"""

import argparse
import dataclasses
import importlib.util
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpinspect.protocol import _carried  # noqa: E402


def load(root: str, name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, root + "/cpinspect/sources/merge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("updates")
    parser.add_argument("--old", required=True)
    args = parser.parse_args()
    with open(args.updates, "rb") as f:
        ups = [u for u in pickle.load(f) if u.threads is not None]
    agent = next(u for u in ups if u.threads_source is None).threads
    spy = [u for u in ups if u.threads_source is not None][-1].threads
    spy = dataclasses.replace(spy, taken_at=agent.taken_at + 1.5)
    step = agent.taken_at + 1.0
    answer = dataclasses.replace(
        agent, taken_at=step, threads=tuple(_carried(t, step, 1.0) for t in agent.threads)
    )
    later = dataclasses.replace(spy, taken_at=spy.taken_at + 1.0)
    for name, root in (("old", args.old), ("new", str(ROOT))):
        merge = load(root, "merge_" + name)
        calls = [0]
        original = merge._restack

        def counted(a, b, original=original, calls=calls):  # type: ignore[no-untyped-def]
            calls[0] += 1
            return original(a, b)

        best = float("inf")
        for _ in range(15):
            memo: dict = {}  # type: ignore[type-arg]
            merge.fallback_threads(spy, agent, memo)
            merge._restack = counted
            calls[0] = 0
            t0 = time.thread_time()
            out = merge.fallback_threads(later, answer, memo)
            best = min(best, time.thread_time() - t0)
            merge._restack = original
        assert out == merge.fallback_threads(later, answer)
        print(
            f"{name}: stacks joined again {calls[0]}, {best * 1000:.1f} ms of CPU a join "
            f"(best of 15), {len(spy.threads)} threads"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
