"""The main screen's compositor renders only the dirty lines of the widgets that cross them
(issue 13), and what it sends the terminal is what Textual's own compositor would send: every
partial update of a real app session (polls moving elapsed times, the header's age ticking,
keys moving the cursor, a tab switch) is checked cell by cell against Textual's answer for
the same dirty regions. Real Textual (``run_test`` + Pilot) on a scripted poller."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import pytest
from rich.style import Style
from textual._compositor import ChopsUpdate, Compositor

from cpinspect.tui.compositing import InspectorScreen, LineCompositor, runs

from .fakes import T0, FakePoller, incident_update
from .helpers import first_data, make_app, poll

Cells = List[Tuple[int, int, str, Optional[Style]]]


def painted(update: Optional[ChopsUpdate]) -> Cells:
    """``(y, x, character, style)`` of every cell a partial update writes to the terminal."""
    if update is None:
        return []
    cells: Cells = []
    for y, x1, x2 in update.spans:
        line = update.chops[y]
        for (x, strip), end in zip(line.items(), update.chop_ends[y]):
            if strip is None or x >= x2 or end <= x1:
                continue
            for segment in strip:
                for char in segment.text:
                    if x1 <= x < x2:
                        cells.append((y, x, char, segment.style))
                    x += 1
    return sorted(cells, key=lambda c: (c[0], c[1]))


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[int, int]]:
    """Every partial update made by ``LineCompositor`` is compared with Textual's for the same
    dirty regions (made after ours, from the same widgets); ``(cells, mismatches)`` each."""
    seen: List[Tuple[int, int]] = []
    ours_method = LineCompositor.render_partial_update

    def checked(self: LineCompositor) -> Any:
        regions = set(self._dirty_regions)
        ours = ours_method(self)
        self._dirty_regions = set(regions)
        theirs = Compositor.render_partial_update(self)
        a, b = painted(ours), painted(theirs)
        mismatches = sum(1 for x, y in zip(a, b) if x != y) + abs(len(a) - len(b))
        seen.append((len(b), mismatches))
        return ours

    monkeypatch.setattr(LineCompositor, "render_partial_update", checked)
    return seen


def test_runs_of_consecutive_lines() -> None:
    # GIVEN sorted line numbers WHEN grouped THEN each run of consecutive lines is one range
    assert runs([]) == []
    assert runs([3, 4, 5, 9, 11, 12]) == [(3, 5), (9, 9), (11, 12)]


async def test_partial_updates_paint_what_textual_would(
    compared: List[Tuple[int, int]],
) -> None:
    # GIVEN the incident on screen (busy workers whose elapsed times move at every poll)
    poller = FakePoller([incident_update(T0)])
    app = make_app(poller)
    async with app.run_test(size=(120, 40)) as pilot:
        await first_data(pilot)
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen)
        compared.clear()
        # WHEN polls move the elapsed times, the cursor moves, and a tab comes and goes
        for n in range(1, 4):
            poller.set(incident_update(T0 + n))
            await poll(pilot)
            await pilot.pause()
        await pilot.press("down", "down", "up")
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        await pilot.press("1")
        await pilot.pause()
        poller.set(incident_update(T0 + 5))
        await poll(pilot)
        await pilot.pause()
    # THEN partial updates were made, painting cells, and every cell they paint is the one
    # Textual's compositor paints for the same dirty regions
    assert len(compared) >= 5
    assert sum(cells for cells, _ in compared) > 0
    assert [bad for _, bad in compared if bad] == []
