"""``attach --auto-snapshot``: the TUI captures on its own and says so on screen and in the log.

The poller is the scripted fake (a staged incident with a starved pool, and a healthy idle
pool); the capture is the real one: files written in a temporary directory and read back.
"""

from __future__ import annotations

from pathlib import Path

from cpinspect.capture_trigger import AutoSnapshot, CaptureSettings, TriggerConfig
from cpinspect.model import LogOrigin
from cpinspect.snapshots import read_snapshots
from cpinspect.sources.base import Capability, Update

from .fakes import FakePoller, incident_update, pool, snapshot, update, worker
from .helpers import first_data, make_app, wait_until


def auto(tmp_path: Path) -> AutoSnapshot:
    """Capture at once (a critical finding held 0 s), two snapshots 0.1 s apart."""
    return AutoSnapshot(
        TriggerConfig(after=0, slow=3600, cooldown=300),
        CaptureSettings(series=2, every=0.1, directory=str(tmp_path), max_size=10**8),
    )


def idle_update() -> Update:
    """Four idle workers, nothing queued: no finding, no slow request."""
    return update(
        snapshot(
            [worker(n, None) for n in range(1, 5)],
            pools=[pool(busy=0, queued=0, oldest=None, size=4)],
        )
    )


async def test_a_starved_pool_is_captured_and_announced_on_screen_and_in_the_log(
    tmp_path: Path,
) -> None:
    # GIVEN the inspector with --auto-snapshot on a target whose pool is starved
    poller = FakePoller([incident_update()])
    app = make_app(poller, auto_snapshot=auto(tmp_path))
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        # WHEN the first poll shows the critical finding
        await wait_until(pilot, lambda: app.auto_captures, what="the automatic capture")
        await pilot.pause()
        # THEN a series of 2 snapshots is written, named by when and why
        json_path = Path(app.auto_captures[0])
        assert json_path.parent == tmp_path
        assert json_path.name.endswith("-pool-starvation.json")
        saved = read_snapshots(json_path)
        assert len(saved) == 2
        assert any(f.id.startswith("pool-starvation:") for f in saved[0].findings)
        # AND it is announced in a notification naming the reason and the path
        shown = [str(n.message) for n in app._notifications]
        announced = [m for m in shown if m.startswith("captured 2 snapshots:")]
        assert announced and "pool starvation held 0 s" in announced[0], shown
        assert str(json_path) in announced[0]
        # AND in the log panel, as a record of the inspector's own
        records = [r for r in app.store.log_records() if r.origin is LogOrigin.INSPECTOR]
        assert [r.message for r in records] == [announced[0]]
        await pilot.press("5")  # the Log tab
        await pilot.pause()
        lines = app.log_panel.view.lines_text()
        assert any("captured 2 snapshots" in line and "(cpinspect)" in line for line in lines)
        # AND the capture ran in a worker: routes read off the UI thread, and the series' polls
        # went through the fake like the App's own (one at start-up, two for the series)
        assert poller.routes_calls and not any(poller.routes_calls)
        assert poller.polls >= 3
        # AND no second capture within the cool-down, though the finding still holds
        await pilot.press("r")
        await wait_until(pilot, lambda: poller.polls >= 4, what="another poll")
        await pilot.pause()
        assert len(app.auto_captures) == 2  # the .json and its .txt report


async def test_a_healthy_target_writes_nothing(tmp_path: Path) -> None:
    # GIVEN the inspector with --auto-snapshot on an idle pool (no finding, no slow request)
    poller = FakePoller([idle_update()])
    # (no routes or sessions read: the fakes' sessions hold a lock, a critical finding)
    poller.capabilities -= {Capability.ROUTES, Capability.SESSIONS}
    app = make_app(poller, auto_snapshot=auto(tmp_path))
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        # WHEN it polls a few times
        for _ in range(3):
            await pilot.press("r")
            await pilot.pause()
        await wait_until(pilot, lambda: poller.polls >= 3, what="three polls")
        await pilot.pause()
        # THEN nothing was captured or written, and no inspector record appeared
        assert app.auto_captures == [] and not app.auto_capturing
        assert list(tmp_path.iterdir()) == []
        assert [r for r in app.store.log_records() if r.origin is LogOrigin.INSPECTOR] == []


async def test_a_paused_screen_still_captures(tmp_path: Path) -> None:
    # GIVEN the inspector with --auto-snapshot on a healthy target, its screen paused
    poller = FakePoller([idle_update()])
    app = make_app(poller, auto_snapshot=auto(tmp_path))
    async with app.run_test(size=(140, 40)) as pilot:
        await first_data(pilot)
        await pilot.press("space")
        assert app.paused
        # WHEN the pool starves while the screen stays frozen
        poller.set(incident_update())
        await pilot.press("r")
        await wait_until(pilot, lambda: app.auto_captures, what="the automatic capture")
        await pilot.pause()
        # THEN the capture is taken all the same, and the screen is still paused
        assert Path(app.auto_captures[0]).name.endswith("-pool-starvation.json")
        assert app.paused
