"""Fixtures of the agent's tests."""

from typing import Iterator

import pytest

from cpinspect.agent.probes.frames import FrameClassifier
from cpinspect.agent.probes.threads import ThreadsProbe
from cpinspect.agent.tracking import RequestTracker
from tests.agent.probe_threads import STOP


@pytest.fixture
def probe() -> Iterator[ThreadsProbe]:
    """A threads probe of this process; the threads parked on ``STOP`` are released after."""
    STOP.clear()
    yield ThreadsProbe(RequestTracker(), FrameClassifier())
    STOP.set()
