"""Package hygiene: every module's ``__all__`` is complete and documented, and the pipeline's
dependencies point one way (the simulator imports nothing of batchgen's)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import batchgen

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(batchgen.__path__, "batchgen.") if m.name != "batchgen.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_definition_and_each_has_a_docstring(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
    exported = set(getattr(module, "__all__", defined))
    assert defined <= exported, f"{name}: missing from __all__: {sorted(defined - exported)}"
    for public in exported:
        obj = getattr(module, public)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{public} has no docstring"


def test_simulator_stands_apart():
    folder = Path(batchgen.__file__).parent / "simulator"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("batchgen."):
                assert node.module.startswith("batchgen.simulator"), f"{path.name} imports {node.module}"


def test_the_command_line_imports_the_runner_only_for_the_commands_that_send():
    # `validate`, `status` and the other read-only commands start without aiohttp or Jinja2.
    code = "import sys, batchgen.cli; print(sorted(m for m in ('aiohttp', 'jinja2', 'batchgen.run.runner') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
