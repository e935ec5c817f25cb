"""Every ```python block of the README and of docs/ runs, and passes mypy --strict.

A block that starts its own ``LocalCluster()`` runs as it is. Any other is written for a
stock cluster's ``/etc/curve/client.conf``: it runs against a fresh local cluster whose
client.conf stands in for that path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from curvefs.testing import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
STOCK_CONF = "/etc/curve/client.conf"


def _blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


BLOCKS = [(page, i, code) for page in PAGES for i, code in enumerate(_blocks(page))]
IDS = [f"{page.relative_to(ROOT)}:{i}" for page, i, _ in BLOCKS]


def test_there_are_runnable_examples() -> None:
    assert len(_blocks(ROOT / "README.md")) >= 2
    assert all("LocalCluster()" in b or STOCK_CONF in b for _, _, b in BLOCKS), IDS


@pytest.mark.parametrize(("page", "index", "code"), BLOCKS, ids=IDS)
def test_docs_example_runs(page: Path, index: int, code: str) -> None:
    if "LocalCluster()" in code:
        exec(compile(code, f"{page}:{index}", "exec"), {"__name__": "docs_example"})
        return
    with LocalCluster() as cluster:
        code = code.replace(STOCK_CONF, str(cluster.conf_path))
        exec(compile(code, f"{page}:{index}", "exec"), {"__name__": "docs_example"})


def test_docs_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """Every block type-checks under mypy --strict against the installed stubs (the
    examples a user copies must not need a `# type: ignore`)."""
    for n, (_, _, code) in enumerate(BLOCKS):
        (tmp_path / f"docs_block{n}.py").write_text(code, encoding="utf-8")
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
            str(config),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
