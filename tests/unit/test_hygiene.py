"""Invariant 5: the agent is self-contained, Python 3.8-compatible, and versioned with us."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cpinspect
from cpinspect.agent import wire

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "cpinspect" / "agent"
FORBIDDEN = (
    "textual",
    "rich",
    "httpx",
    "psutil",
    "cpinspect.tui",
    "cpinspect.cli",
    "cpinspect.model",
    "cpinspect.protocol",
    "cpinspect.sources",
    "cpinspect.attach",
    "cpinspect.formatting",
    "cpinspect.errors",
)


def test_importing_the_agent_in_a_fresh_interpreter_pulls_in_nothing_else_of_ours():
    # GIVEN a fresh interpreter
    code = "import json, sys; import cpinspect.agent; print(json.dumps(sorted(sys.modules)))"
    # WHEN it imports the agent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True
    ).stdout
    modules = json.loads(out)
    # THEN none of the inspector side or its dependencies came along
    leaked = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert leaked == []
    assert "cherrypy" in modules


def test_agent_modules_use_only_relative_imports_of_their_own():
    for path in AGENT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("cpinspect"), (path, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("cpinspect"), (path, alias.name)


def _python38() -> str | None:
    """A working Python 3.8 (pyenv shims exist for versions that are not selected: try it)."""
    candidates = sorted(Path(os.path.expanduser("~/.pyenv/versions")).glob("3.8*/bin/python3.8"))
    for candidate in [*map(str, candidates), shutil.which("python3.8")]:
        if (
            candidate
            and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0
        ):
            return candidate
    return None


def test_agent_is_python_38_syntax():
    files = sorted(str(p) for p in AGENT.rglob("*.py"))
    py38 = _python38()
    if py38 is not None:
        # The real 3.8 compiler: catches what ast's feature_version does not.
        code = "import sys\nfor f in sys.argv[1:]: compile(open(f).read(), f, 'exec')"
        result = subprocess.run([py38, "-c", code, *files], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    for f in files:
        ast.parse(Path(f).read_text(), feature_version=(3, 8))


def test_versions_agree():
    assert cpinspect.__version__ == wire.AGENT_VERSION
