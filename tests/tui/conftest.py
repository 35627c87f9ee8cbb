"""Shared fixtures for the TUI tests: a fixed time zone, colour on, and Pilot helpers."""

from __future__ import annotations

import time
from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """UTC wall clock (request start times are shown in local time) and no NO_COLOR leak."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("NO_COLOR", raising=False)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
