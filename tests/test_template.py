"""Workers forked from the template process: they serve as spawned workers do, in sessions and
environments of their own; the launcher kills and stops them and sees them exit; a lost
template leaves its workers followed, and later workers are spawned. Executors are forked
from a template of their engine's (onnxruntime, torch already imported); handlers from the
plain one, which imports neither."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from controller import LaunchRequest, ProcessLauncher, WorkerExit, deploy_file
from controller.template import Template
from runtime import Client
from runtime.launch import PRELOADS, Preload, preload_for
from tests.conftest import FAST, wait_workers

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from controller import EmbeddedNats
    from tests.conftest import Cluster

pytestmark = pytest.mark.anyio

WHO = '''
"""Two functions that tell about the process serving them."""

import os
import sys

import numpy as np

from runtime import function


def _who(event):
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "env": {k: os.environ.get(k) for k in event.get("keys", [])},
        "draw": float(np.random.random()),
        "modules": [m for m in event.get("modules", []) if m in sys.modules],
    }


@function(name="who_a")
def who_a(event):
    return _who(event)


@function(name="who_b")
def who_b(event):
    return _who(event)
'''


@pytest.fixture
async def who(nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The functions deployed (no controller): name -> version."""
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    path = tmp_path / "who.py"
    path.write_text(WHO)
    return {s.name: s.version for s in await deploy_file(nc, path, wait=0)}


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone: it is dead, only not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def environ_of(pid: int | None) -> bytes:
    """The environment a process started with, as the kernel keeps it."""
    return Path(f"/proc/{pid}/environ").read_bytes()


async def next_exit(launcher: ProcessLauncher) -> WorkerExit:
    with anyio.fail_after(30):
        return await launcher.exits.receive()


async def ask(
    nc: NATS, name: str, keys: tuple[str, ...] = (), modules: tuple[str, ...] = ()
) -> dict[str, Any]:
    await wait_workers(nc, name, bool)
    event = {"keys": list(keys), "modules": list(modules)}
    answer: dict[str, Any] = await Client(nc).call(name, event, timeout=30)
    return answer


def mapped(pid: int | None, library: str) -> bool:
    """Whether a process has a shared library of ``library``'s loaded."""
    return f"/{library}/".encode() in Path(f"/proc/{pid}/maps").read_bytes()


async def test_forked_workers_serve_in_sessions_and_environments_of_their_own(
    nc: NATS, who: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
        assert await launcher.ready()
        template = launcher.template_pid
        assert template is not None
        # Workers get the launcher's environment as it is when they start, not the
        # template's as it was when that started.
        monkeypatch.setenv("SHOAL_TEST_LATE", "set after the template started")
        for name in who:
            env = {**FAST, "SHOAL_TEST_OWN": name}
            await launcher.start(LaunchRequest(name, f"w-{name}", who[name], env))
        keys = ("SHOAL_TEST_OWN", "SHOAL_TEST_LATE", "SHOAL_PARENT_PID", "SHOAL_WORKER_ID")
        answers = {name: await ask(nc, name, keys) for name in who}
        for name, a in answers.items():
            assert a["pid"] == launcher.pid(f"w-{name}")
            assert a["ppid"] == template  # forked, not spawned
            assert a["sid"] == a["pid"]  # its own session, as a spawned worker's
            assert a["env"] == {
                "SHOAL_TEST_OWN": name,
                "SHOAL_TEST_LATE": "set after the template started",
                "SHOAL_PARENT_PID": str(template),  # it drains when the template goes
                "SHOAL_WORKER_ID": f"w-{name}",
            }
        assert answers["who_a"]["draw"] != answers["who_b"]["draw"]  # numpy reseeded
        entries = await wait_workers(nc, "who_a", bool)
        phases = next(iter(entries.values()))["startup"]
        assert set(phases) == {"spawn", "connect", "load", "setup"}
        # Nothing ran in the template but its main thread when it forked.
        assert os.listdir(f"/proc/{template}/task") == [str(template)]


async def test_killing_and_stopping_forked_workers(
    nc: NATS, who: dict[str, str], tmp_path: Path
) -> None:
    async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
        for wid in ("w1", "w2"):
            await launcher.start(LaunchRequest("who_a", wid, who["who_a"], FAST))
        await wait_workers(nc, "who_a", lambda e: len(e) == 2)
        first, second = launcher.pid("w1"), launcher.pid("w2")
        template = launcher.template_pid
        assert first is not None and second is not None and template is not None

        await launcher.kill("w1")
        gone = await next_exit(launcher)
        assert (gone.worker_id, gone.returncode) == ("w1", -signal.SIGKILL)
        assert not alive(first) and launcher.running() == {"w2"}

        os.kill(second, signal.SIGKILL)  # as tests/test_faults.py does: not through us
        gone = await next_exit(launcher)
        assert (gone.worker_id, gone.returncode) == ("w2", -signal.SIGKILL)

        await launcher.start(LaunchRequest("who_a", "w3", who["who_a"], FAST))
        third = launcher.pid("w3")
        assert third is not None
        await wait_workers(nc, "who_a", lambda e: "who_a.w3" in e)
        await launcher.shutdown()  # SIGTERM: it drains and exits 0; the template exits
        gone = await next_exit(launcher)
        assert (gone.worker_id, gone.returncode) == ("w3", 0)
        assert not alive(third) and not alive(template)


async def test_a_cancelled_launcher_still_stops_its_forked_workers(
    nc: NATS, who: dict[str, str], tmp_path: Path
) -> None:
    """As Ctrl-C of ``shoal up`` cancels everything around the launcher."""
    with anyio.fail_after(60), anyio.CancelScope() as outer:
        async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
            await launcher.start(LaunchRequest("who_a", "w1", who["who_a"], FAST))
            engine = PRELOADS["onnxruntime"]
            await launcher.start(LaunchRequest("who_b", "w2", who["who_b"], FAST, engine))
            await wait_workers(nc, "who_a", bool)
            await wait_workers(nc, "who_b", bool)
            pids = [launcher.pid("w1"), launcher.pid("w2"), launcher.template_pid]
            engines = launcher.template(engine)
            assert engines is not None and await engines.ready()
            assert launcher.pid("w2") != engines.pid and None not in pids
            outer.cancel()
            await anyio.sleep_forever()
    assert not any(alive(pid) for pid in [*pids, engines.pid] if pid is not None)


async def test_a_lost_template_leaves_its_workers_followed_and_new_ones_spawned(
    nc: NATS, who: dict[str, str], tmp_path: Path
) -> None:
    async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
        await launcher.start(LaunchRequest("who_a", "w1", who["who_a"], FAST))
        orphan = (await ask(nc, "who_a"))["pid"]
        template = launcher.template_pid
        assert template is not None
        os.kill(template, signal.SIGKILL)
        # The worker sees its parent gone and drains; its pidfd tells the launcher it exited
        # (with no status: the template would have reaped it).
        gone = await next_exit(launcher)
        assert (gone.worker_id, gone.returncode) == ("w1", None)
        assert not alive(orphan)

        await launcher.start(LaunchRequest("who_b", "w2", who["who_b"], FAST))
        assert (await ask(nc, "who_b"))["ppid"] == os.getpid()  # spawned, as without one


async def test_a_worker_that_needs_other_import_time_settings_is_spawned(
    nc: NATS, who: dict[str, str], tmp_path: Path
) -> None:
    async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
        assert await launcher.ready()
        env = {**FAST, "PYTHONHASHSEED": "7"}  # read when the interpreter started
        await launcher.start(LaunchRequest("who_a", "w1", who["who_a"], env))
        assert (await ask(nc, "who_a"))["ppid"] == os.getpid()


async def test_the_template_process_holds_no_secret(tmp_path: Path, monkeypatch) -> None:
    """Every forked worker's memory starts as a copy of the template's: a worker with
    credentials of its own must not find the controller's there."""
    monkeypatch.setenv("SHOAL_NATS_PASSWORD", "controller-pw-7f3a")
    monkeypatch.setenv("SHOAL_WORKER_NATS_PASSWORD", "workers-pw-7f3a")
    monkeypatch.setenv("SHOAL_TEST_MARKER", "passed on")
    async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
        assert await launcher.ready()
        environ = environ_of(launcher.template_pid)
    assert b"SHOAL_NATS_PASSWORD=" not in environ and b"pw-7f3a" not in environ
    assert b"SHOAL_TEST_MARKER=passed on" in environ  # what is no secret is passed on


def test_which_environments_the_template_can_fork() -> None:
    template = Template()
    template._alive = True
    template._base = {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
    assert template.usable({"PATH": "/usr/bin", "OMP_NUM_THREADS": "2", "SHOAL_X": "1"})
    assert not template.usable({"PATH": "/bin", "OMP_NUM_THREADS": "4"})
    assert not template.usable({"PATH": "/bin"})  # unset where it was set counts too
    assert not template.usable({"OMP_NUM_THREADS": "2", "LD_PRELOAD": "x.so"})
    template._alive = False
    assert not template.usable(template._base)


async def test_without_the_template_workers_are_spawned(
    nc: NATS, who: dict[str, str], tmp_path: Path
) -> None:
    async with ProcessLauncher(code_dir=tmp_path / "code", template=False) as launcher:
        assert launcher.template_pid is None and not await launcher.ready()
        await launcher.start(LaunchRequest("who_a", "w1", who["who_a"], FAST))
        assert (await ask(nc, "who_a"))["ppid"] == os.getpid()


PROBE = '''
"""A handler and two executors, one per engine, that tell what their process had imported
before their own code ran, and run their engine once (after the fork, in the child)."""

import os
import sys

from runtime import Executor, executor, function, uses

ENGINES = ("onnxruntime", "torch")


def _seen():
    imported = [m for m in ENGINES if m in sys.modules]
    return {"pid": os.getpid(), "ppid": os.getppid(), "imported": imported}


@executor(name="ort_probe", engine="onnxruntime", max_batch=4, max_wait_ms=1)
class OrtProbe:
    def setup(self):
        self.seen = _seen()
        import numpy as np
        import onnxruntime
        from onnx import TensorProto, helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 2  # its own pool, started in the child
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        out = session.run(None, {"x": np.array([[-1, 2, -3, 4]] * 64, dtype=np.float32)})[0]
        self.seen["ran"] = float(out.sum())

    def __call__(self, batch):
        return [self.seen for _ in batch]


@executor(name="torch_probe", engine="torch", max_batch=4, max_wait_ms=1)
class TorchProbe:
    def setup(self):
        self.seen = _seen()
        import torch

        torch.set_num_threads(2)  # its OpenMP pool, started in the child
        a = torch.ones(256, 256)
        self.seen["ran"] = float((a @ a).sum())

    def __call__(self, batch):
        return [self.seen for _ in batch]


@function(name="probe")
async def probe(
    event,
    ort: Executor[int, dict] = uses(OrtProbe),
    torch: Executor[int, dict] = uses(TorchProbe),
):
    return {"handler": _seen(), "onnxruntime": await ort(0), "torch": await torch(0)}
'''


async def test_executors_are_forked_from_their_engines_template_and_handlers_not(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    await cluster.deploy(path)
    answer = await Client(cluster.nc).call("probe", {}, timeout=120)
    launcher = cluster.launcher
    plain = launcher.template_pid
    assert answer["handler"]["ppid"] == plain and answer["handler"]["imported"] == []
    for engine in ("onnxruntime", "torch"):
        template = launcher.template(PRELOADS[engine])
        assert template is not None, engine
        seen = answer[engine]
        assert seen["ppid"] == template.pid, engine  # forked from its engine's template
        assert seen["imported"] == [engine], engine  # imported there, not by its own code
        assert seen["ran"] == {"onnxruntime": 64 * 6.0, "torch": 256.0**3}[engine]
    # The plain template (handlers, fused functions) has loaded no engine.
    assert not mapped(plain, "onnxruntime") and not mapped(plain, "torch")


def test_what_a_worker_finds_imported_comes_from_its_spec() -> None:
    assert preload_for("executor", "onnxruntime") == PRELOADS["onnxruntime"]
    assert preload_for("executor", "torch") == PRELOADS["torch"]
    assert preload_for("executor", "custom") is None
    assert preload_for("function", "") is None
    assert preload_for("function", "torch") is None  # handlers stay light


async def test_a_lost_engine_template_leaves_its_workers_spawned_and_the_plain_one_used(
    nc: NATS, who: dict[str, str], tmp_path: Path
) -> None:
    engine = PRELOADS["onnxruntime"]
    async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
        await launcher.start(LaunchRequest("who_a", "w1", who["who_a"], FAST, engine))
        first = await ask(nc, "who_a", modules=("onnxruntime",))
        template = launcher.template(engine)
        assert template is not None and template.pid is not None
        assert first["ppid"] == template.pid and first["modules"] == ["onnxruntime"]
        os.kill(template.pid, signal.SIGKILL)
        gone = await next_exit(launcher)
        assert (gone.worker_id, gone.returncode) == ("w1", None)

        await launcher.start(LaunchRequest("who_b", "w2", who["who_b"], FAST, engine))
        spawned = await ask(nc, "who_b", modules=("onnxruntime",))
        assert spawned["ppid"] == os.getpid() and spawned["modules"] == []
        await launcher.kill("w2")
        await next_exit(launcher)
        await launcher.start(LaunchRequest("who_b", "w3", who["who_b"], FAST))
        await wait_workers(nc, "who_b", lambda e: "who_b.w3" in e)  # w2 was killed, not drained
        assert (await ask(nc, "who_b"))["ppid"] == launcher.template_pid


@pytest.mark.parametrize(
    ("preload", "warning"),
    [
        (Preload("custom", ("shoal_no_such_engine",)), "cannot import shoal_no_such_engine"),
        # An import that leaves a thread running, not declared idle: refused.
        (Preload("custom", ("tests.threaded_import",), idle_threads=0), "forking is not safe"),
    ],
)
async def test_an_engine_template_that_cannot_be_used_has_its_workers_spawned(
    nc: NATS,
    who: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    preload: Preload,
    warning: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="shoal.launcher"):
        async with ProcessLauncher(code_dir=tmp_path / "code", template=True) as launcher:
            await launcher.prepare(preload)
            assert not await launcher.ready(preload)
            for n, name in enumerate(who):
                await launcher.start(LaunchRequest(name, f"w{n}", who[name], FAST, preload))
                assert (await ask(nc, name))["ppid"] == os.getpid()
            assert await launcher.ready()  # the plain one is unaffected
    said = [r.getMessage() for r in caplog.records if r.name == "shoal.launcher"]
    assert len([m for m in said if warning in m]) == 1, said  # one warning, not one per launch
