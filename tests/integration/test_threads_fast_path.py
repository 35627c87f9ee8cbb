"""The threads probe's fast path on a real CherryPy process: entries reused for workers that did
not run must stay right — a new request on the very same stack is sent, and ``elapsed`` of a
worker held all along keeps growing in full answers while the rest of its entry stays put."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from tests.conftest import wait_for
from tests.helpers import BackgroundRequests
from tests.integration.test_threads_delta import holding, threads, without_elapsed


def test_a_new_request_on_the_same_stack_is_sent(spawn_target):
    # GIVEN one worker serving a short request, a long one queued behind it, answered once
    target = spawn_target("--threads", "1")
    sock = target.socket_path()
    first_req = BackgroundRequests(target.port, "/block?seconds=2&tag=first", 1)
    during = wait_for(
        lambda: (lambda b: b if holding(b, "first") else None)(threads(sock)),
        what="the first request on the worker",
    )
    worker = holding(during, "first")[0]
    BackgroundRequests(target.port, "/block?seconds=60&tag=second", 1)

    # WHEN the first ends and the same worker takes the second, in the same handler and line
    wait_for(lambda: first_req.results, what="the first request to end")

    def delta_with_second() -> Optional[Dict[str, Any]]:
        body = threads(sock, during["cursor"])
        return body if holding(body, "second") else None

    delta = wait_for(delta_with_second, what="a delta showing the second request")

    # THEN the worker is sent with the new request, on a stack that looks the same as before
    sent = holding(delta, "second")[0]
    assert sent["ident"] == worker["ident"]
    assert [(f["file"], f["line"]) for f in sent["stack"]] == [
        (f["file"], f["line"]) for f in worker["stack"]
    ]
    assert sent["request"]["started_at"] != worker["request"]["started_at"]


def test_a_worker_held_all_along_keeps_its_entry_and_a_growing_elapsed(spawn_target):
    # GIVEN two workers held in a handler, answered once in full
    target = spawn_target("--threads", "4")
    sock = target.socket_path()
    BackgroundRequests(target.port, "/block?seconds=60&tag=held", 2)
    wait_for(lambda: len(holding(threads(sock), "held")) == 2, what="two held workers")

    def parked() -> Optional[Dict[str, Any]]:
        body = threads(sock)
        later = threads(sock, body["cursor"])
        return (
            body
            if not {t["ident"] for t in holding(body, "held")}
            & {t["ident"] for t in later["threads"]}
            else None
        )

    first = wait_for(parked, what="the held workers parked in their handler")
    held = {t["ident"]: t for t in holding(first, "held")}

    # WHEN answered in full again after they stood still (a delta in between)
    time.sleep(0.5)
    between = threads(sock, first["cursor"])
    again = {t["ident"]: t for t in holding(threads(sock), "held")}

    # THEN the delta left them out, and the full answer has them as before, elapsed grown
    assert not set(held) & {t["ident"] for t in between["threads"]}
    for ident, entry in held.items():
        assert without_elapsed(again[ident]) == without_elapsed(entry)
        assert again[ident]["elapsed"] > entry["elapsed"]
    assert between["pools"][0]["oldest_busy"] >= max(t["elapsed"] for t in held.values())
