"""SVG snapshots of the findings (pytest-textual-snapshot): the list (``f``) over the incident,
at 100x30 and at 80x24. Deterministic like ``test_snapshots.py`` (scripted data, a fixed
clock, UTC). Regenerate after an intended change with ``--snapshot-update`` and look first."""

from __future__ import annotations

from typing import Any, Callable

from textual.pilot import Pilot

from .helpers import first_data, poll, wait_until
from .test_snapshots import incident_app

SnapCompare = Callable[..., bool]


async def open_findings(pilot: Pilot[Any]) -> None:
    from cpinspect.tui.screens.findings import FindingsScreen

    await first_data(pilot)
    await poll(pilot, times=11)
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, FindingsScreen))
    await pilot.press("down")  # onto the first evidence: the pane shows the finding in full
    await pilot.pause()


def test_findings_list(snap_compare: SnapCompare) -> None:
    # GIVEN the incident, WHEN f is pressed: the starvation and its threads, the slow upload
    assert snap_compare(incident_app(), terminal_size=(100, 30), run_before=open_findings)


def test_findings_list_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(incident_app(), terminal_size=(80, 24), run_before=open_findings)
