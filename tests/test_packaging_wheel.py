"""The release wheel: `maturin build --release` once, then a fresh venv installs it.

What must hold for a user who never installs Rust: the wheel is abi3 from the oldest
CPython that `requires-python` admits, `auditwheel show` confirms the manylinux tag in its
name, and a fresh virtual environment installs it from files alone (no index, binaries
only, so no build backend can run) and runs the SDK's documented examples
(tests/test_sdk_examples.py, with that venv's own pytest) against a LocalCluster whose
servers are that venv's interpreter running the installed `curvefs._serve`.

Nothing here is skipped: without maturin or auditwheel (the `test` extra installs both) the
build or the audit fails, and so does this module. The build reuses the checkout's
`target/`, so after `pip install .` it is mostly linking; a cold one takes minutes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# Tools of the fresh venv's own, installed from wheels made of this environment's copies.
VENV_TOOLS = ["pytest", "pytest-timeout"]
# A cold release build on two shared cores, with everything else the test does.
BUDGET_S = 1500

pytestmark = pytest.mark.timeout(BUDGET_S)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    env: Mapping[str, str]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def _run(
    cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `cmd` (killed after the test's whole budget, so never left behind); on failure
    the assertion shows the end of its output."""
    p = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=BUDGET_S
    )
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _repack(dist: md.Distribution, out: Path) -> Path:
    """A wheel of an installed pure-Python distribution, so the fresh venv needs no index.

    The files are the ones its RECORD lists inside site-packages (its scripts are made again
    from entry_points.txt by pip), minus bytecode and the installer's own records."""
    wheel_meta = dist.read_text("WHEEL") or ""
    assert "Root-Is-Purelib: true" in wheel_meta, f"{dist.name} is not pure Python"
    tag = re.search(r"^Tag: (\S+)$", wheel_meta, re.M)
    assert tag is not None, f"{dist.name}: no Tag in WHEEL"
    files = dist.files
    assert files, f"{dist.name} has no RECORD"
    name = re.sub(r"[-_.]+", "_", dist.name).lower()
    wheel = out / f"{name}-{dist.version}-{tag.group(1)}.whl"
    record: list[str] = []
    record_path = ""
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            parts = f.parts
            if parts[0] == ".." or "__pycache__" in parts or f.suffix == ".pyc":
                continue
            if parts[0].endswith(".dist-info") and parts[-1] in {
                "RECORD",
                "INSTALLER",
                "REQUESTED",
                "direct_url.json",
            }:
                if parts[-1] == "RECORD":
                    record_path = f.as_posix()
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            z.writestr(f.as_posix(), data)
            record.append(_record_line(f.as_posix(), data))
        assert record_path, f"{dist.name}: RECORD not listed"
        record.append(f"{record_path},,")
        z.writestr(record_path, "\n".join(record) + "\n")
    return wheel


def _closure(names: list[str]) -> list[md.Distribution]:
    """`names` and everything they require here (markers evaluated for this interpreter)."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        key = canonicalize_name(todo.pop())
        if key in seen:
            continue
        dist = md.distribution(key)
        seen[key] = dist
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _requires(wheel: Path) -> list[str]:
    """The names of the wheel's unconditional dependencies (Requires-Dist without extras)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(ln.split(":", 1)[1]) for ln in lines if ln.startswith("Requires-Dist:")]
    return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _venv_env(home: Path, venv: Path) -> dict[str, str]:
    """The environment of a machine with only the venv: no cargo or rustc on PATH, no
    PYTHONPATH, no pip configuration of ours."""
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for keep in ("TMPDIR", "LANG", "LC_ALL", "CURVEFS_TRANSPORT"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    dist, deps, venv, home = tmp / "dist", tmp / "deps", tmp / "venv", tmp / "home"
    for d in (deps, home):
        d.mkdir()

    # The one build: the README's command, for this interpreter rather than the first
    # python3 on PATH (abi3 or not, maturin asks an interpreter for its configuration).
    build = [sys.executable, "-m", "maturin", "build", "--release", "--out", str(dist)]
    _run([*build, "--interpreter", sys.executable], cwd=ROOT)
    wheels = list(dist.glob("curvefs-*.whl"))
    assert len(wheels) == 1, wheels

    # What the wheel itself requires (its METADATA, not a list kept here), and the tools.
    for needed in _closure([*_requires(wheels[0]), *VENV_TOOLS]):
        _repack(needed, deps)

    env = _venv_env(home, venv)
    _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=tmp)
    py = str(venv / "bin" / "python")
    pip_install = [py, "-m", "pip", "install", "--quiet", "--no-index", "--only-binary=:all:"]
    links = ["--find-links", str(dist), "--find-links", str(deps)]
    _run([*pip_install, *links, "curvefs", *VENV_TOOLS], env=env, cwd=tmp)
    _run([py, "-m", "pip", "check"], env=env, cwd=tmp)
    yield Installed(wheels[0], venv, env)


def test_wheel_is_abi3_from_requires_python(installed: Installed) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lowest = re.fullmatch(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])
    assert lowest is not None, pyproject["project"]["requires-python"]
    name, version, py_tag, abi_tag, plat = installed.wheel.name.removesuffix(".whl").split("-")
    assert (name, py_tag, abi_tag) == ("curvefs", f"cp3{lowest.group(1)}", "abi3")
    with zipfile.ZipFile(installed.wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"curvefs-{version}.dist-info/METADATA").decode()
    assert f"Requires-Python: >=3.{lowest.group(1)}" in metadata.splitlines()
    assert {"curvefs/_core.abi3.so", "curvefs/_core.pyi", "curvefs/py.typed"} <= names
    assert plat.startswith("manylinux_") and plat.endswith(platform.machine())


def test_auditwheel_confirms_the_manylinux_tag(installed: Installed) -> None:
    out = _run([sys.executable, "-m", "auditwheel", "show", str(installed.wheel)]).stdout
    found = re.search(r"consistent\s+with\s+the\s+following\s+platform\s+tag:\s+\"([^\"]+)\"", out)
    assert found is not None, out
    assert installed.wheel.name.endswith(f"-{found.group(1)}.whl"), out


CHECK = """
import json, sys
import curvefs, curvefs._core
from curvefs.testing import LocalCluster

with LocalCluster() as c:
    with open(f"/proc/{c.pid('mds')}/cmdline", "rb") as f:
        server = [a.decode() for a in f.read().split(b"\\0") if a]
    cbd = curvefs.CBDClient()
    assert cbd.Init(c.conf_path) == 0
    cluster_id = cbd.GetClusterId()
    cbd.UnInit()
print(json.dumps({
    "executable": sys.executable, "package": curvefs.__file__,
    "core": curvefs._core.__file__, "debug_build": curvefs._core.debug_build,
    "server": server, "cluster_id": cluster_id,
}))
"""


def test_fresh_venv_imports_the_wheel_and_serves_from_it(installed: Installed) -> None:
    # -I: no script directory, PYTHONPATH or user site: only what the venv installed.
    out = _run([installed.python, "-I", "-c", CHECK], env=installed.env, cwd=installed.venv)
    got = json.loads(out.stdout)
    site = str(installed.venv / "lib")
    assert got["package"].startswith(site) and got["core"].startswith(site), got
    assert got["core"].endswith("_core.abi3.so") and got["debug_build"] is False, got
    assert got["server"][:3] == [got["executable"], "-m", "curvefs._serve"], got
    assert got["executable"] == installed.python and got["cluster_id"], got


def test_fresh_venv_runs_the_sdk_examples(installed: Installed) -> None:
    # The venv's pytest with the repository's pytest settings; the checkout's root holds no
    # `curvefs` package (the source is under python/), so `import curvefs` is the wheel's.
    pytest_ = [installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    config = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]
    examples = str(ROOT / "tests" / "test_sdk_examples.py")
    out = _run([*pytest_, *config, examples], env=installed.env, cwd=installed.venv)
    assert re.search(r"\b\d+ passed\b", out.stdout), out.stdout
    assert not re.search(r"skipped|deselected|xfail", out.stdout), out.stdout
