"""Invariant 5: the agent is self-contained, Python 3.8-compatible, and versioned with us."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Sequence

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


RUNNING_AGENT = (
    "cherrypy",
    "cheroot",
    "cpinspect.agent.plugin",
    "cpinspect.agent.server",
    "cpinspect.agent.tracking",
    "cpinspect.agent.probes",
)
"""What only the process being inspected may load: CherryPy, and the agent that runs in it."""


def _fresh(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON value last, returned here."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT)
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _within(modules: List[str], packages: Sequence[str]) -> List[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_importing_the_agent_in_a_fresh_interpreter_pulls_in_nothing_else_of_ours():
    # GIVEN a fresh interpreter
    code = "import json, sys; import cpinspect.agent.plugin; print(json.dumps(sorted(sys.modules)))"
    # WHEN it imports the whole running agent
    modules = _fresh(code)
    # THEN none of the inspector side or its dependencies came along
    assert _within(modules, FORBIDDEN) == []
    assert "cherrypy" in modules


def _inspector_modules() -> List[str]:
    widgets = sorted(
        "cpinspect.tui.widgets." + p.stem
        for p in (ROOT / "cpinspect" / "tui" / "widgets").glob("*.py")
        if p.stem != "__init__"
    )
    assert widgets, "no widget modules found"
    return [
        "cpinspect.model",
        "cpinspect.protocol",
        "cpinspect.formatting",
        "cpinspect.analysis",
        "cpinspect.snapshots",
        "cpinspect.sources.file",
        "cpinspect.tui.app",
        "cpinspect.tui.panels",
        "cpinspect.tui.widgets",
        *widgets,
    ]


def test_the_inspector_side_imports_the_agents_pure_modules_without_side_effects():
    # GIVEN a fresh interpreter that records every atexit.register call
    code = (
        "import atexit, importlib, json, sys\n"
        "registered = []\n"
        "real = atexit.register\n"
        "def register(func, *a, **k):\n"
        "    registered.append(getattr(func, '__module__', None) or repr(func))\n"
        "    return real(func, *a, **k)\n"
        "atexit.register = register\n"
        "for name in %r: importlib.import_module(name)\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'atexit': registered}))\n"
    ) % (_inspector_modules(),)
    # WHEN it imports the model, protocol, formatting and the TUI with every widget
    out = _fresh(code)
    # THEN neither CherryPy nor the running agent came along (which is what registers the
    # `inspector` config namespace and the agent's atexit hook), and nothing of ours hooks exit
    assert _within(out["modules"], RUNNING_AGENT) == []
    assert "cpinspect.agent.wire" in out["modules"]
    assert [m for m in out["atexit"] if str(m).startswith("cpinspect")] == []


def test_importing_cherrypy_then_the_agent_registers_the_inspector_namespace():
    # GIVEN a fresh interpreter, as in an app: CherryPy first, then the agent (the README's way)
    code = (
        "import json, sys, cherrypy\n"
        "import cpinspect.agent\n"
        "print(json.dumps(['inspector' in cherrypy.config.namespaces,"
        " 'cpinspect.agent.plugin' in sys.modules]))"
    )
    # WHEN it has imported both
    registered, plugin_loaded = _fresh(code)
    # THEN `inspector.on = True` works in any config applied afterwards
    assert registered and plugin_loaded


def test_the_agent_package_loads_its_plugin_only_when_asked_and_install_is_reached_lazily():
    # GIVEN a fresh interpreter that imports the agent package without CherryPy
    code = (
        "import json, sys\n"
        "import cpinspect.agent\n"
        "before = [m for m in %r if m in sys.modules]\n"
        "install = cpinspect.agent.install\n"
        "from cpinspect.agent import installed, uninstall\n"
        "plugin = sys.modules['cpinspect.agent.plugin']\n"
        "import cherrypy\n"
        "try:\n"
        "    cpinspect.agent.no_such_name\n"
        "    missing = False\n"
        "except AttributeError:\n"
        "    missing = True\n"
        "print(json.dumps({\n"
        "    'before': before,\n"
        "    'same': [install is plugin.install, installed is plugin.installed,"
        " uninstall is plugin.uninstall],\n"
        "    'installed': installed() is not None,\n"
        "    'namespace': 'inspector' in cherrypy.config.namespaces,\n"
        "    'missing': missing,\n"
        "    'dir': sorted(set(cpinspect.agent.__all__) - set(dir(cpinspect.agent))),\n"
        "}))\n"
    ) % (RUNNING_AGENT,)
    # WHEN it then asks for install, installed and uninstall
    out = _fresh(code)
    # THEN nothing of the running agent was loaded before, and the first use loaded the plugin
    # (namespace included) and handed out its functions, without installing anything
    assert out["before"] == []
    assert out["same"] == [True, True, True]
    assert out["installed"] is False
    assert out["namespace"] is True
    assert out["missing"] is True
    assert out["dir"] == []


def test_importing_the_plugin_registers_the_inspector_namespace_whatever_the_order():
    code = (
        "import json\n"
        "import cpinspect.agent.plugin\n"
        "import cherrypy\n"
        "print(json.dumps('inspector' in cherrypy.config.namespaces))"
    )
    assert _fresh(code) is True


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


START_UP_FREE = (
    "textual",
    "rich",
    "httpx",
    "psutil",
    "cpinspect.model",
    "cpinspect.formatting",
    "cpinspect.protocol",
    "cpinspect.sources.agent",
    "cpinspect.sources.live",
    "cpinspect.sources.open",
    "cpinspect.sources.pyspy",
    "cpinspect.tui",
)
"""What ``cpinspect --help`` must not load: each subcommand's module is imported to build the
parser, so each keeps its heavy imports inside the code that runs the command."""


def test_building_the_command_line_loads_no_ui_transport_or_model_code():
    # GIVEN a fresh interpreter
    code = (
        "import contextlib, io, json, sys\n"
        "from cpinspect.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        build_parser().parse_args(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'help': out.getvalue()}))\n"
    )
    # WHEN it builds the parser and prints the help, as `cpinspect --help` does
    out = _fresh(code)
    # THEN every subcommand is listed, and neither the UI, the HTTP client, psutil nor the
    # sources were imported to say so
    assert "dump" in out["help"] and "snapshot" in out["help"]
    assert _within(out["modules"], START_UP_FREE) == []
