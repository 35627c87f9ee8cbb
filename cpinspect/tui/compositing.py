"""A screen whose partial repaints render only the lines that changed (issue 13).

Textual's compositor (the pinned 8.x) answers a partial repaint by drawing the box around every
dirty region: with the header's age (line 0) and the table's elapsed column (lines 5-45) dirty at
one poll, every widget on the screen (the footer, the tabs, the containers, the scroll bar, the
stack view) hands over every one of its lines, each passed through its line filters and then
thrown away unless its line is dirty. ``LineCompositor`` asks each widget only for the lines
where a dirty span crosses it, and leaves out the widgets no dirty span crosses. The terminal
receives the same spans as before (``ChopsUpdate`` writes only the dirty spans), so what is
drawn is the same; full repaints (a resize, a layout) are Textual's own.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Dict, List, Optional, Tuple

from textual._compositor import ChopsUpdate, Compositor
from textual.geometry import Region
from textual.screen import Screen
from textual.strip import Strip

Span = Tuple[int, int, int]
"""``(y, x1, x2)``: the cells ``[x1, x2)`` of screen line ``y``."""


def runs(lines: List[int]) -> List[Tuple[int, int]]:
    """Consecutive lines ``[3, 4, 5, 9]`` as runs ``[(3, 5), (9, 9)]`` (``lines`` sorted)."""
    out: List[Tuple[int, int]] = []
    for y in lines:
        if out and out[-1][1] == y - 1:
            out[-1] = (out[-1][0], y)
        else:
            out.append((y, y))
    return out


class LineCompositor(Compositor):
    """A compositor whose partial updates render each widget's dirty lines alone."""

    def render_partial_update(self) -> Optional[ChopsUpdate]:
        update_regions = self._dirty_regions.copy()
        self._dirty_regions.clear()
        if not update_regions:
            return None
        width, height = self.size
        spans: List[Span] = [
            (y, max(0, a), min(width, b))
            for y, a, b in self._regions_to_spans(update_regions)
            if 0 <= y < height and a < width and b > 0
        ]
        if not spans:
            return None
        cuts = self.cuts
        chops: List[Dict[int, Optional[Strip]]] = [dict.fromkeys(cut_set[:-1]) for cut_set in cuts]
        # For each dirty line, the pieces between its cuts that a dirty span touches, by where
        # they start: what the terminal will be sent, and all that must be painted.
        wanted: Dict[int, List[int]] = {}
        for y, a, b in spans:
            line_cuts = cuts[y]
            touched = wanted.setdefault(y, [])
            for start, end in zip(line_cuts, line_cuts[1:]):
                if start < b and end > a:
                    touched.append(start)
        dirty_lines = sorted(wanted)
        intersection = Region.intersection
        # Front to back, as Textual paints: the first strip given for a piece wins, and a widget
        # is asked only for lines with a wanted piece of its own that nothing in front painted.
        for widget, (region, clip) in self.visible_widgets.items():
            x, y, w, h = intersection(region, clip)
            if not w or not h:
                continue
            right = x + w
            lines = [
                line_y
                for line_y in dirty_lines[
                    bisect_left(dirty_lines, y) : bisect_left(dirty_lines, y + h)
                ]
                if any(
                    x <= start < right and chops[line_y][start] is None for start in wanted[line_y]
                )
            ]
            for top, bottom in runs(lines):
                strips = widget.render_lines(
                    Region(x - region.x, top - region.y, w, bottom - top + 1)
                )
                for line_y, strip in zip(range(top, bottom + 1), strips):
                    line = chops[line_y]
                    final_cuts = [cut for cut in cuts[line_y] if right >= cut >= x]
                    pieces = strip.divide([cut - x for cut in final_cuts[1:]])
                    for cut, piece in zip(final_cuts, pieces):
                        if line.get(cut) is None:
                            line[cut] = piece
        chop_ends = [cut_set[1:] for cut_set in cuts]
        return ChopsUpdate(chops, spans, chop_ends)


class InspectorScreen(Screen[None]):
    """The app's main screen: Textual's ``Screen`` with ``LineCompositor``."""

    def __init__(self, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self._compositor = LineCompositor()
