"""What the tests of ``ThreadsProbe`` on real threads of the test process share: a ``STOP``
event that releases the threads a test parks on it (set after each test by the ``probe``
fixture in this directory's conftest), and small helpers."""

import threading
from typing import Any, Dict

STOP = threading.Event()


def start(fn: Any, *args: Any) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def by_ident(answer: Dict[str, Any]) -> Dict[int, Dict[str, Any]]:
    return {t["ident"]: t for t in answer["threads"]}
