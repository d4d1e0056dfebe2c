"""The house holds its shape (see ``../shared/design/house.md``): commands that send nothing
start without an HTTP stack, nothing outside ``store/`` names a path or run-level value of the
folder, modules stay small, and dependencies point one way, down the pipeline."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

import batchgen
from batchgen.store import ManifestRecord, OutputFolder, utc_now
from batchgen.store.layout import IMAGES, LOCK, MANIFEST, PRIVATE, REPORT, STATE, THUMBNAILS, Meta

PACKAGE = Path(batchgen.__file__).parent
MOST_LINES = 420  # "no module over ~400 lines"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An output folder with one failed record, written without any request."""
    out = tmp_path / "out"

    async def write() -> None:
        async with OutputFolder.open(out) as store:
            record = ManifestRecord.model_validate(
                {"job_id": "a", "model": "reve/create-image", "status": "failed", "finished_at": utc_now(),
                 "error": {"message": "refused", "kind": "RequestRejected"}, "request": {"model": "reve/create-image", "prompt": "p"}}
            )  # fmt: skip
            await store.finish(record, final=True)

    asyncio.run(write())
    return out


@pytest.mark.parametrize(
    "command",
    [
        ["validate", "{sample}"],
        ["plan", "{sample}", "--out", "{out}"],
        ["status", "{out}"],
        ["verify", "{out}"],
        ["report", "{out}"],
        ["failed", "{out}"],
        ["manifest", "{out}"],
        ["export", "{out}", "--format", "webdataset", "--to", "{out}/wds"],
        ["schema"],
        ["models"],
    ],
)
def test_commands_that_send_nothing_import_no_aiohttp(command, folder):
    argv = [arg.format(sample=SAMPLES / "quickstart.yaml", out=folder) for arg in command]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "batchgen", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "batchgen.cli" in imported  # (the check below reads what -X importtime printed)
    assert not [m for m in imported if m.split(".")[0] == "aiohttp"]


def test_a_command_that_sends_does_import_aiohttp():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "batchgen", "run", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "aiohttp" in done.stderr


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings (prose stays free to name files)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_nothing_outside_the_store_names_a_path_or_a_key_of_the_folder():
    # ("images" alone is also the API's answer field: as a folder it is named by a path, "images/...")
    names = {MANIFEST, REPORT, THUMBNAILS, PRIVATE, STATE, LOCK, f"{IMAGES}/", f"{THUMBNAILS}/"}
    keys = {key.value for key in Meta}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0]
        if part in ("store", "simulator"):
            continue
        source = path.read_text()
        for line, text in _code_strings(path):
            # A file name, or a path built from one; words for people (help, logs) may name them.
            if text in names or any(text.startswith(n) for n in names if n.endswith("/")):
                found.append(f"{path.name}:{line} {text!r}")
        for call in ("get_meta(", "set_meta(", "Meta."):
            if call in source:
                found.append(f"{path.name}: {call}")
        found += [
            f"{path.name}:{line} key {text!r}"
            for line, text in _code_strings(path)
            if text in keys and "meta" in source
        ]
    assert found == []


def test_no_module_is_over_about_400_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MOST_LINES} == {}


# Stages, bottom to top: a module imports only from its own stage or those below it.
LAYERS = [
    {"money", "outcome", "errors", "images", "settings"},
    {"models", "jobs"},
    {"api"},
    {"store"},
    {"gates", "report", "export"},
    {"run", "plan"},  # (plan judges jobs as a run does: run.selection)
    {"commands", "cli", "__main__", "__init__"},
]


def _stage(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_dependencies_point_down_the_pipeline():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.parts[0] == "simulator":
            continue
        name = (
            "batchgen." + ".".join(p for p in relative.parts if p != "__init__")
            if relative.parts != ("__init__",)
            else "batchgen.__init__"
        )
        here = _stage(name if name != "batchgen" else "batchgen.__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("batchgen."):
                if node.module.startswith("batchgen.simulator"):
                    continue
                if _stage(node.module) > here:
                    upward.append(f"{name} imports {node.module}")
    assert upward == []
