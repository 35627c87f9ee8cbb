"""Injection on the newer half of the other Pythons (``test_inject_versions.py`` has the body)."""

from __future__ import annotations

import pytest

from tests.integration.test_inject_versions import NEWER, inject_inspect_detach


@pytest.mark.parametrize("version", NEWER)
def test_inject_inspect_detach_on_each_newer_python(spawn_target, tmp_path, version):
    inject_inspect_detach(spawn_target, tmp_path, version)
