"""Two live sources, one picture: the agent's threads joined with py-spy's, thread by thread.

Pure functions on model objects. Threads are matched by ident (py-spy's ``thread_id`` is
``threading.get_ident()``). The agent knows requests, busy state for sure, and which frames are
the app's; py-spy knows who holds the GIL and the native frames.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from cpinspect.model import Frame, ThreadInfo, ThreadsSnapshot, evolve


def _app_locations(thread: ThreadInfo) -> Dict[Tuple[str, int], bool]:
    return {f.location: f.is_app for f in thread.stack}


def _restack(agent: ThreadInfo, spy: ThreadInfo) -> Tuple[Frame, ...]:
    """py-spy's stack (with native frames) with the agent's app/library verdict per frame."""
    verdict = _app_locations(agent)
    by_file = {f.filename: f.is_app for f in agent.stack}
    out = []
    for frame in spy.stack:
        is_app = (
            False
            if frame.native
            else verdict.get(frame.location, by_file.get(frame.filename, frame.is_app))
        )
        # The same frame object when the verdict is py-spy's own (most frames): no copy.
        out.append(frame if is_app == frame.is_app else evolve(frame, is_app=is_app))
    return tuple(out)


def merge_threads(
    agent: ThreadsSnapshot, spy: ThreadsSnapshot, native: bool = False
) -> ThreadsSnapshot:
    """The agent's snapshot, each thread with py-spy's GIL ownership (and native stack)."""
    spy_threads = spy.by_ident()
    merged = []
    for thread in agent.threads:
        other = spy_threads.pop(thread.ident, None)
        if other is None:
            merged.append(thread)
            continue
        changes: Dict[str, object] = {"owns_gil": other.owns_gil}
        if native and any(f.native for f in other.stack):
            changes["stack"] = _restack(thread, other)
            changes["stack_truncated"] = 0
        elif other.owns_gil == thread.owns_gil:
            # Nothing to change: the same object (the table formats only the threads that
            # changed since the last poll, by identity).
            merged.append(thread)
            continue
        merged.append(evolve(thread, **changes))
    # Threads py-spy saw and the agent did not (started between the two reads) still count.
    merged.extend(spy_threads.values())
    return evolve(agent, threads=tuple(merged))


Carried = Dict[int, Tuple[ThreadInfo, ThreadInfo, ThreadInfo]]
"""``fallback_threads``' memo: by ident, (py-spy's thread, the agent's, the joined one)."""


def fallback_threads(
    spy: ThreadsSnapshot, last: Optional[ThreadsSnapshot], memo: Optional[Carried] = None
) -> ThreadsSnapshot:
    """py-spy's threads standing in for an agent that does not answer.

    Pool numbers come only from the agent: the last ones are kept (the UI marks them stale).
    Requests the agent last saw are kept on threads still inside the same handler frame, where
    py-spy could not read them itself.

    ``memo`` (kept by the caller across polls, replaced in place) reuses the joined thread of
    the last call when py-spy's thread and the agent's are the same objects as then: py-spy's
    readings reuse the objects of threads that did not move (``DumpCache``), so at 1,000
    threads a poll joins only the ~100 that did, and the table formats only those.
    """
    if last is None:
        return spy
    previous = last.by_ident()
    threads = []
    joined: Carried = {}
    for thread in spy.threads:
        before = previous.get(thread.ident)
        was = memo.get(thread.ident) if memo is not None else None
        if was is not None and was[0] is thread and _same_join(was[1], before):
            if before is not None and was[1] is not before:
                was = (thread, before, was[2])
            kept = was[2]
            if before is not None and kept.request is not None and thread.request is None:
                # A carried request runs on: only its elapsed time moves.
                elapsed = _carried_elapsed(before, last, spy)
                if elapsed != kept.elapsed:
                    kept = evolve(kept, elapsed=elapsed)
                    was = (thread, before, kept)
            joined[thread.ident] = was
            threads.append(kept)
            continue
        spied = thread
        if before is not None:
            # The agent's app/library verdict first: py-spy can only guess from paths.
            thread = evolve(thread, stack=_restack(before, thread))
            if (
                thread.request is None
                and before.request is not None
                and before.top_app_frame is not None
                and thread.top_app_frame is not None
                and before.top_app_frame.function == thread.top_app_frame.function
            ):
                thread = evolve(
                    thread, request=before.request, elapsed=_carried_elapsed(before, last, spy)
                )
            joined[spied.ident] = (spied, before, thread)
        threads.append(thread)
    if memo is not None:
        memo.clear()
        memo.update(joined)
    return evolve(
        spy,
        threads=tuple(threads),
        pools=last.pools,
        pools_available=last.pools_available,
        pools_note=last.pools_note,
        requests_served=last.requests_served,
    )


def _same_join(was: Optional[ThreadInfo], now: Optional[ThreadInfo]) -> bool:
    """Whether the agent's thread ``now`` joins py-spy's as ``was`` did: the join reads only
    its stack (the app/library verdicts, the top app frame) and its request; its elapsed time
    is brought forward apart. Each agent answer brings the busy workers as new objects (a
    delta moves their ``elapsed`` on, the GIL merge sets ``owns_gil``) with the same stack and
    request objects: at 1,000 threads, 500 stacks were joined again at every answer."""
    if was is now:
        return True
    return (
        was is not None
        and now is not None
        and was.stack is now.stack
        and was.request is now.request
    )


def _carried_elapsed(
    before: ThreadInfo, last: ThreadsSnapshot, spy: ThreadsSnapshot
) -> Optional[float]:
    """How long the request the agent last saw on a thread has run at py-spy's reading: from
    its start (the target's wall clock, the one ``taken_at`` reads), else the agent's elapsed
    carried forward. py-spy's thread has none of its own without ``--locals`` (a large
    process): the table said "busy 0.0 s" for workers spinning for minutes."""
    request = before.request
    started = request.started_at if request is not None else None
    if started is not None:
        return max(0.0, spy.taken_at - started)
    if before.elapsed is not None:
        return before.elapsed + max(0.0, spy.taken_at - last.taken_at)
    return None


def with_gil_holder(
    snap: Optional[ThreadsSnapshot], ident: Optional[int]
) -> Optional[ThreadsSnapshot]:
    """``snap`` with thread ``ident`` marked as holding the GIL (py-spy saw it), if not already."""
    if snap is None or ident is None:
        return snap
    if any(t.ident == ident and t.owns_gil for t in snap.threads):
        return snap
    threads = tuple(evolve(t, owns_gil=True) if t.ident == ident else t for t in snap.threads)
    return evolve(snap, threads=threads)


def gil_holder(snapshot: Optional[ThreadsSnapshot]) -> Optional[ThreadInfo]:
    if snapshot is None:
        return None
    for thread in snapshot.threads:
        if thread.owns_gil:
            return thread
    return None
