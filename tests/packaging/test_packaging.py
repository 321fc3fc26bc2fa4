"""Shoal as a user installs it: the sdist and wheel built here, installed into fresh venvs.

- the wheel with no extras is what a client needs: it calls a running cluster (a real
  nats-server and a controller started from the dev environment) with ``runtime.Client``,
  and ``shoal up`` there says in one line to install ``shoal[local]``;
- the wheel with ``[local]`` alone runs ``shoal up --once`` on a folder holding echo.py, which
  answers (nats-server, SeaweedFS and a worker, none of torch or onnxruntime).

The venvs install from the package index (pip's own configuration), at the versions of
requirements/constraints.txt. Each step is bounded in time. ``-m "not packaging"`` leaves
these tests out.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.conftest import FUNCTIONS, Cluster

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "requirements" / "constraints.txt"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
PACKAGES = ("runtime", "controller", "storage")
# What the build reads: the sdist is built from a copy of these, the wheel from the sdist.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in", *PACKAGES)
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 600
UP_TIMEOUT = 240


@dataclass
class Dist:
    sdist: Path
    wheel: Path


@dataclass
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name


def _env(**extra: str) -> dict[str, str]:
    """The environment of a command in a fresh venv: nothing that points at this checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("SHOAL_")
    }
    env.update(extra)
    return env


def _run(args: list[str | Path], *, cwd: Path, timeout: float, what: str, **env: str) -> str:
    """Run a command; on failure or timeout, fail with what it printed."""
    try:
        proc = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=_env(**env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what}: no result within {timeout:g} s\n{e.stdout or ''}{e.stderr or ''}")
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _venv(path: Path, requirement: str) -> Venv:
    venv = Venv(path)
    _run([sys.executable, "-m", "venv", path], cwd=path.parent, timeout=120, what="python -m venv")
    _run(
        [venv.python, "-m", "pip", "install", "--quiet", "-c", PINS, requirement],
        cwd=path.parent,
        timeout=INSTALL_TIMEOUT,
        what=f"pip install {requirement}",
    )
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist, built from a copy of the sources, and the wheel, built from that sdist."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.fail("the build package is missing: pip install -e '.[test]'", pytrace=False)
    root = tmp_path_factory.mktemp("dist")
    src, out = root / "src", root / "out"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    # --no-isolation: the setuptools of this environment (the lock pins it), no download.
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src],
        cwd=root,
        timeout=BUILD_TIMEOUT,
        what="python -m build",
    )
    (sdist,) = out.glob("shoal-*.tar.gz")
    (wheel,) = out.glob("shoal-*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def bare(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh venv with the wheel and no extras."""
    venv = _venv(tmp_path_factory.mktemp("bare") / "venv", str(dist.wheel))
    yield venv
    shutil.rmtree(venv.path, ignore_errors=True)  # ~60 MB; pytest keeps its last runs' files


@pytest.fixture(scope="module")
def local(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh venv with the wheel and the `local` extra alone."""
    venv = _venv(tmp_path_factory.mktemp("local") / "venv", f"shoal[local] @ {dist.wheel.as_uri()}")
    yield venv
    shutil.rmtree(venv.path, ignore_errors=True)  # ~220 MB: nats-server and weed


def test_wheel_and_sdist_contents(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
        meta = email.parser.Parser().parsestr(
            whl.read(f"shoal-{VERSION}.dist-info/METADATA").decode()
        )
    for package in PACKAGES:
        assert f"{package}/py.typed" in names, f"{package}/py.typed is not in the wheel"
    assert f"shoal-{VERSION}.dist-info/licenses/LICENSE" in names
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Version"] == VERSION
    base = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names_of_base = sorted(r.split("[")[0].split(">")[0].split("<")[0].strip() for r in base)
    assert names_of_base == ["anyio", "minio", "msgpack", "nats-py", "uvloop"], base
    assert set(meta.get_all("Provides-Extra") or []) >= {"local", "models", "containers", "test"}
    with tarfile.open(dist.sdist) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"} <= members
    assert not any(m.startswith("tests/") for m in members), "the sdist carries stray tests"


CALL = """
import json, sys, anyio, runtime
from runtime import Client

async def main():
    async with await Client.connect(sys.argv[1]) as client:
        value = await client.call("echo", {"text": "from a bare install"}, timeout=60)
    print(json.dumps({"value": value, "file": runtime.__file__, "version": runtime.__version__}))

anyio.run(main)
"""

PROBE = """
import importlib.util, json, shutil, sys
from pathlib import Path
found = {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}
found["nats-server"] = (Path(sys.executable).parent / "nats-server").exists()
found["weed"] = (Path(sys.executable).parent / "weed").exists()
print(json.dumps(found))
"""


def _probe(venv: Venv, tmp_path: Path) -> dict[str, bool]:
    out = _run(
        [venv.python, "-c", PROBE, "torch", "onnxruntime", "docker", "nats", "minio"],
        cwd=tmp_path,
        timeout=60,
        what="probe",
    )
    found: dict[str, bool] = json.loads(out)
    return found


@pytest.mark.anyio
async def test_bare_install_calls_a_running_cluster(
    bare: Venv, cluster: Cluster, tmp_path: Path
) -> None:
    assert await cluster.deploy(FUNCTIONS / "echo.py") == ["echo"]
    # The client runs in the fresh venv while the controller serves on this event loop.
    proc = await anyio.run_process(
        [str(bare.python), "-c", CALL, cluster.url],
        cwd=tmp_path,
        env=_env(),
        check=False,
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, f"the client in the bare venv failed:\n{out}{err}"
    answer = json.loads(out)
    assert answer["value"] == {"text": "from a bare install"}
    assert Path(answer["file"]).is_relative_to(bare.path), answer["file"]  # not this checkout
    assert answer["version"] == VERSION
    assert _probe(bare, tmp_path) == {
        "torch": False,
        "onnxruntime": False,
        "docker": False,
        "nats": True,
        "minio": True,
        "nats-server": False,
        "weed": False,
    }


def test_shoal_up_without_local_says_what_to_install(bare: Venv, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(bare.bin("shoal")), "up", "--once", "--data", str(tmp_path / "data")],
        cwd=tmp_path,
        env=_env(SHOAL_NATS_URL=f"nats://127.0.0.1:{_free_port()}", PATH=os.defpath),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pip install 'shoal[local]'" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing written before the error


def test_local_extra_runs_shoal_up_once(local: Venv, tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    shutil.copy2(FUNCTIONS / "echo.py", functions / "echo.py")
    data = (tmp_path / "data").resolve()  # absolute: weed runs with its own working directory
    out = _run(
        [local.bin("shoal"), "up", "--once", "--functions", functions, "--data", data],
        cwd=tmp_path,
        timeout=UP_TIMEOUT,
        what="shoal up --once in the [local] venv",
        SHOAL_NATS_URL=f"nats://127.0.0.1:{_free_port()}",
        PATH=os.defpath,  # its servers come from the venv, not from this machine
    )
    assert "started nats-server" in out, out
    assert "started an S3 server" in out, out
    assert json.dumps({"text": "hello from shoal"}) in out.splitlines(), out
    found = _probe(local, tmp_path)
    assert found["nats-server"] and found["weed"], found
    assert not found["torch"] and not found["onnxruntime"], found
