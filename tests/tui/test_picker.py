"""The process picker driven like a person, on a fake process lister (no psutil, no py-spy)."""

from __future__ import annotations

import threading
from typing import List

from textual.widgets import DataTable, Input

from cpinspect.model import ProcessSummary
from cpinspect.tui.screens.confirm import ConfirmScreen
from cpinspect.tui.screens.picker import Pick, PickerApp

from .helpers import wait_until

SHOP = ProcessSummary(
    pid=4121,
    user="www",
    cmdline=("python3", "shop.py"),
    ports=(8080,),
    uptime=3600.0,
    cpu_percent=12.0,
    rss=50 * 1024 * 1024,
    agent=True,
    apps=("", "/api"),
    busy=10,
    size=10,
)
BLOG = ProcessSummary(
    pid=5000,
    user="www",
    cmdline=("python3", "-m", "blog"),
    ports=(9090,),
    uptime=60.0,
    cpu_percent=0.0,
    rss=30 * 1024 * 1024,
)
ALICE = ProcessSummary(
    pid=300,
    user="alice",
    cmdline=("python3", "report.py"),
    cherrypy=False,
    reason="owned by alice: run as alice or root",
)


class FakeLister:
    """Returns scripted listings in turn (the last one repeats) and counts calls and threads."""

    def __init__(self, *listings: List[ProcessSummary]) -> None:
        self.listings = list(listings)
        self.calls = 0
        self.threads: List[str] = []

    def __call__(self) -> List[ProcessSummary]:
        self.threads.append(threading.current_thread().name)
        listing = self.listings[min(self.calls, len(self.listings) - 1)]
        self.calls += 1
        return listing


def pids(app: PickerApp) -> List[int]:
    return [s.pid for s in app.shown]


def cell(app: PickerApp, row: int, key: str) -> str:
    table: DataTable[object] = app.query_one(DataTable)
    return str(table.get_cell(str(app.shown[row].pid), key))


async def test_lists_processes_inspectable_first_in_a_worker_thread() -> None:
    # GIVEN a machine with two CherryPy processes and one of another user's
    lister = FakeLister([ALICE, BLOG, SHOP])
    app = PickerApp(lister)
    async with app.run_test(size=(140, 30)) as pilot:
        # WHEN the picker opens
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        # THEN both CherryPy processes come first, the uninspectable one last
        assert pids(app) == [4121, 5000, 300]
        assert cell(app, 0, "ports") == "8080"
        assert cell(app, 0, "agent") == "yes"
        assert cell(app, 0, "apps") == "/, /api"
        assert cell(app, 0, "busy") == "10/10"
        assert cell(app, 1, "agent") == "no"
        # AND the listing ran off the UI thread
        assert lister.threads and lister.threads[0] != threading.main_thread().name
        assert "3 of 3 processes" in app.status


async def test_uninspectable_process_is_dimmed_with_its_reason_and_does_not_open() -> None:
    # GIVEN another user's Python process we may not read
    app = PickerApp(FakeLister([ALICE]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        # THEN it is shown, dimmed, with the reason
        table: DataTable[object] = app.query_one(DataTable)
        note = table.get_cell("300", "reason")
        assert "owned by alice: run as alice or root" in str(note)
        assert "dim" in str(note.style)
        # WHEN the user presses Enter on it
        await pilot.press("enter")
        await pilot.pause()
        # THEN the picker stays open and says why
        assert app.is_running
        assert app.status == "cannot open pid 300: owned by alice: run as alice or root"
    assert app.return_value is None


async def test_enter_returns_the_selected_pid() -> None:
    # GIVEN two CherryPy processes listed
    app = PickerApp(FakeLister([SHOP, BLOG]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        # WHEN the user moves down one row (a process without the agent) and presses Enter
        await pilot.press("down", "enter")
        await pilot.pause()
        # THEN the picker asks before loading the agent; n opens it with py-spy only
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await wait_until(pilot, lambda: not app.is_running, what="the picker to exit")
    assert app.return_value == Pick(5000, inject=False)


async def test_a_process_with_the_agent_opens_without_a_question() -> None:
    app = PickerApp(FakeLister([SHOP, BLOG]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        await pilot.press("enter")
        await wait_until(pilot, lambda: not app.is_running, what="the picker to exit")
    assert app.return_value == Pick(4121, inject=False)


async def test_the_inject_confirmation_y_loads_escape_goes_back() -> None:
    # GIVEN a process without the agent, chosen
    app = PickerApp(FakeLister([SHOP, BLOG]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        await pilot.press("down", "enter")
        await pilot.pause()
        question = str(app.screen.query_one("#confirm-question").render())
        assert "pid 5000 has no cpinspect agent" in question and "gdb" in question
        # WHEN escape: THEN back in the list, nothing chosen
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        # WHEN asked again and answered y: THEN the pick says to load the agent
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.is_running, what="the picker to exit")
    assert app.return_value == Pick(5000, inject=True)


async def test_slash_filters_by_text_and_escape_clears() -> None:
    # GIVEN three processes
    app = PickerApp(FakeLister([SHOP, BLOG, ALICE]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        # WHEN the user types "/" then "9090"
        await pilot.press("slash", *"9090")
        await pilot.pause()
        # THEN only the process on port 9090 is shown
        assert app.query_one(Input).has_focus
        assert pids(app) == [5000]
        assert "1 of 3 processes matching '9090'" in app.status
        # WHEN Enter closes the filter box and Enter again opens the one row (py-spy only)
        await pilot.press("enter", "enter")
        await pilot.pause()
        await pilot.press("n")
        await wait_until(pilot, lambda: not app.is_running, what="the picker to exit")
    assert app.return_value == Pick(5000, inject=False)


async def test_filter_matches_user_and_escape_shows_all_again() -> None:
    app = PickerApp(FakeLister([SHOP, BLOG, ALICE]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        # GIVEN a filter on the user name
        await pilot.press("slash", *"alice")
        await pilot.pause()
        assert pids(app) == [300]
        # WHEN escape is pressed
        await pilot.press("escape")
        await pilot.pause()
        # THEN every process is back and the table has the keys again
        assert pids(app) == [4121, 5000, 300]
        assert app.query_one(DataTable).has_focus


async def test_r_lists_again_and_keeps_the_selection() -> None:
    # GIVEN a listing, then a new process appears
    newcomer = ProcessSummary(pid=4500, user="www", cmdline=("python3", "new.py"))
    lister = FakeLister([SHOP, BLOG], [SHOP, newcomer, BLOG])
    app = PickerApp(lister)
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        await pilot.press("down")
        # WHEN the user presses r
        await pilot.press("r")
        await wait_until(pilot, lambda: app.listings == 2, what="the second listing")
        # THEN the new process shows and the cursor stays on the same process
        assert pids(app) == [4121, 4500, 5000]
        assert app.selected == BLOG


async def test_q_quits_without_choosing_and_empty_listing_says_so() -> None:
    # GIVEN no CherryPy process on the machine
    app = PickerApp(FakeLister([]))
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        assert app.status.startswith("no CherryPy processes found")
        # WHEN Enter then q are pressed
        await pilot.press("enter", "q")
        await wait_until(pilot, lambda: not app.is_running, what="the picker to exit")
    # THEN nothing is chosen
    assert app.return_value is None


async def test_a_failing_listing_is_shown_and_r_retries() -> None:
    # GIVEN a lister that fails once
    calls: List[int] = []

    def flaky() -> List[ProcessSummary]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("proc is not mounted")
        return [SHOP]

    app = PickerApp(flaky)
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_until(pilot, lambda: app.listings == 1, what="the first listing")
        # THEN the error is on screen in one line
        assert app.status == "could not list processes: OSError: proc is not mounted (r retries)"
        # WHEN r is pressed
        await pilot.press("r")
        await wait_until(pilot, lambda: app.listings == 2, what="the retry")
        # THEN the processes show
        assert pids(app) == [4121]
