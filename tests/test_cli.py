"""The ``shoal`` command as users run it: a separate process, its output, its exit code.

``shoal up`` from a relative data folder, stopped by Ctrl-C or failing half-way through
start-up, leaves no process behind; every command fails fast and plainly with NATS away; a
command the connected role may not use says so; ``shoal rm`` removes what it says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError

from controller import EmbeddedNats, deploy_file
from controller.cli import Exit
from controller.up import SERVING
from runtime import Client
from runtime.wire import deadletter, protocol
from runtime.wire.connection import kv
from tests.conftest import FNS, FUNCTIONS, Cluster

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio

SHOAL = [sys.executable, "-m", "controller.cli"]
REPO = Path(__file__).parent.parent
HANG = 60.0  # seconds after which a command counts as hung (the CLI's own bound is 5 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leftovers(mark: str) -> list[str]:
    """Processes that carry ``mark`` in their environment: what a run left running."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()!r}")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def metrics(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode().splitlines()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Up:
    """``shoal up`` run as a user would, in its own process group (as a terminal's job)."""

    cwd: Path
    port: int
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    lines: list[str] = field(default_factory=list)
    metrics_port: int = field(default_factory=lambda: free_port())  # its own, not 9464

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env.update(
            SHOAL_NATS_URL=f"nats://127.0.0.1:{self.port}",
            SHOAL_TEST_MARK=self.mark,
            SHOAL_METRICS_ADDR=f"127.0.0.1:{self.metrics_port}",
            PYTHONPATH=str(REPO),
        )
        env.update(more)  # may name other servers
        return env

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*SHOAL, "up", *args],
            cwd=self.cwd,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def read_until(self, proc: subprocess.Popen[str], line: str) -> None:
        assert proc.stdout is not None
        for got in proc.stdout:
            self.lines.append(got.rstrip("\n"))
            if got.startswith(line):
                return
        raise AssertionError(f"shoal up ended before {line!r}:\n" + "\n".join(self.lines))

    def finish(self, proc: subprocess.Popen[str]) -> int:
        out, _ = proc.communicate(timeout=HANG)
        self.lines += out.splitlines()
        return proc.returncode

    def assert_nothing_left(self) -> None:
        assert leftovers(self.mark) == []
        assert port_free(self.port)


@pytest.fixture
def user_dir(tmp_path: Path) -> Iterator[Up]:
    """A folder holding only ``functions/echo.py``, as a user's project."""
    (tmp_path / "functions").mkdir()
    shutil.copy(FUNCTIONS / "echo.py", tmp_path / "functions" / "echo.py")
    up = Up(tmp_path, free_port())
    try:
        yield up
    finally:
        for line in leftovers(up.mark):  # a failed test must not leave servers running
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


def shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=HANG,
    )


async def ashoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: shoal(*args, env=env))


@pytest.mark.parametrize("template", ["1", "0"], ids=["template", "no-template"])
def test_up_from_a_relative_data_folder_serves_and_ctrl_c_stops_everything(
    user_dir: Up, template: str
) -> None:
    """With workers forked from the template process (the default) and spawned."""
    up = user_dir
    # defaults: --data .shoal, --functions functions (both relative)
    proc = up.start(SHOAL_WORKER_TEMPLATE=template)
    try:
        up.read_until(proc, SERVING)
        called = shoal("invoke", "echo", '{"text": "hi"}', env=up.env())
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout) == {"text": "hi"}
        assert f"status page on http://127.0.0.1:{up.metrics_port}/" in up.lines[-2]
        echo_ok = 'shoal_invocations_total{controller="'
        deadline = time.monotonic() + 5  # a worker's figures reach /metrics within 5 s
        while not any(  # the demo call and this one
            line.startswith(echo_ok) and 'function="echo",status="ok"} 2.0' in line
            for line in metrics(up.metrics_port)
        ):
            assert time.monotonic() < deadline, metrics(up.metrics_port)
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole job
    assert up.finish(proc) == 0, "\n".join(up.lines)
    up.assert_nothing_left()
    assert (up.cwd / ".shoal" / "nats").is_dir() and (up.cwd / ".shoal" / "s3").is_dir()
    # Quiet: one line per server, function and worker, the demo, the serving line.
    out = [line for line in up.lines if line.strip()]
    assert out[0].startswith("started nats-server")
    assert out[1].startswith("started an S3 server")
    assert out[2].startswith("deployed echo")
    assert out[3].startswith("$ shoal invoke echo")
    started = [line for line in out if line.startswith("started worker")]
    assert started and all(line.endswith(", forked)") == (template == "1") for line in started)
    assert SERVING in out and out[-1] == "stopping..."
    assert not [line for line in out if "Retrying" in line or "Traceback" in line], out


def test_up_once_exits_after_the_demo(user_dir: Up) -> None:
    proc = user_dir.start("--once")
    assert user_dir.finish(proc) == 0, "\n".join(user_dir.lines)
    assert '{"text": "hello from shoal"}' in user_dir.lines
    user_dir.assert_nothing_left()


def test_nats_failing_to_start_leaves_nothing(user_dir: Up) -> None:
    with socket.socket() as taken:  # bound, not listening: the port is refused, and busy
        taken.bind(("127.0.0.1", user_dir.port))
        proc = user_dir.start("--once")
        code = user_dir.finish(proc)
    assert code == Exit.FAILED, user_dir.lines
    assert user_dir.lines[-1].startswith("error: nats-server did not start"), user_dir.lines
    assert "address already in use" in user_dir.lines[-1]
    assert not any("Traceback" in line for line in user_dir.lines)
    assert leftovers(user_dir.mark) == []


def test_s3_failing_to_start_stops_nats(user_dir: Up) -> None:
    (user_dir.cwd / ".shoal" / "s3").mkdir(parents=True)
    (user_dir.cwd / ".shoal" / "s3" / "data").write_text("a file where weed's folder goes")
    proc = user_dir.start("--once")
    code = user_dir.finish(proc)
    assert code == Exit.FAILED, user_dir.lines
    assert user_dir.lines[0].startswith("started nats-server")
    assert user_dir.lines[-1].startswith("error: the S3 server did not start"), user_dir.lines
    user_dir.assert_nothing_left()


def test_a_failure_after_start_up_stops_servers_and_workers(user_dir: Up) -> None:
    functions = user_dir.cwd / "functions"
    (functions / "warm.py").write_text(
        "from runtime import function\n\n\n@function(min_workers=1)\ndef warm(event):\n"
        "    return event\n"
    )
    (functions / "zz_broken.py").write_text("def broken(:\n")  # deployed last
    proc = user_dir.start()
    code = user_dir.finish(proc)
    assert code == Exit.FAILED, user_dir.lines
    assert any(line.startswith("deployed warm") for line in user_dir.lines)
    assert "zz_broken.py" in user_dir.lines[-1], user_dir.lines
    assert not any("Traceback" in line for line in user_dir.lines)
    user_dir.assert_nothing_left()


COMMANDS = [
    ("status",),
    ("invoke", "echo", "{}"),
    ("invoke", "echo", "{}", "--durable"),
    ("result", "some-id"),
    ("cancel", "some-id"),
    ("dlq", "list"),
    ("dlq", "redrive"),
    ("deploy", str(FUNCTIONS / "echo.py")),
    ("rm", "echo"),
    ("calibrate",),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_fails_fast_when_nats_is_away(args: tuple[str, ...]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    done = shoal(*args, env={"SHOAL_NATS_URL": url})
    assert done.returncode == Exit.UNREACHABLE, done.stderr
    lines = done.stderr.splitlines()
    assert 1 <= len(lines) <= 3 and url in lines[0], lines
    assert "Traceback" not in done.stderr
    # --server wins over the environment; -v adds the traceback.
    other = f"nats://127.0.0.1:{free_port()}"
    done = shoal("--server", other, "-v", *args, env={"SHOAL_NATS_URL": url})
    assert done.returncode == Exit.UNREACHABLE and other in done.stderr
    assert "Traceback" in done.stderr


def test_usage_errors_and_version() -> None:
    assert shoal("invoke", "echo", "not json").returncode == Exit.USAGE
    assert shoal("no-such-command").returncode == Exit.USAGE
    version = shoal("--version")
    assert version.returncode == 0 and version.stdout.startswith("shoal ")


async def test_exit_codes_and_json_against_a_cluster(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    await cluster.deploy(FNS / "basics.py")
    env = {"SHOAL_NATS_URL": cluster.url}
    ok = await ashoal("invoke", "echo", '{"a": 1}', "--id", "cli-1", env=env)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"a": 1}
    missing = await ashoal("invoke", "nope", "{}", env=env)
    assert missing.returncode == Exit.NOT_FOUND
    assert json.loads(missing.stdout)["error"]["code"] == "function_not_found"
    failed = await ashoal("invoke", "boom", "{}", env=env)
    assert failed.returncode == Exit.FUNCTION_ERROR, failed.stderr
    assert json.loads(failed.stdout)["error"]["code"] == "function_error"

    result = await ashoal("result", "cli-1", "--json", env=env)
    assert result.returncode == 0 and json.loads(result.stdout)["result"] == {"a": 1}
    none = await ashoal("result", "never-sent", env=env)
    assert none.returncode == Exit.NOT_FOUND and "never-sent" in none.stderr

    status = json.loads((await ashoal("status", "--json", env=env)).stdout)
    echo = next(f for f in status["functions"] if f["function"] == "echo")
    assert echo["state"] == "warm" and echo["workers"] >= 1 and echo["backlog"] == 0
    assert status["controllers"] == 1
    # Keep-alive: echo's is adaptive, still on its fixed window (no idle time yet); its one
    # cold start is recorded by the controller in a task: once that is done, status shows it.
    keepalive = cluster.controller.keepalive
    with anyio.fail_after(20):
        while keepalive.busy():
            await keepalive.synced.wait()
    status = json.loads((await ashoal("status", "--json", env=env)).stdout)
    echo = next(f for f in status["functions"] if f["function"] == "echo")
    assert echo["keepalive"]["mode"] == "adaptive" and echo["keepalive"]["kind"] == "fixed"
    assert echo["cold_starts_1h"] == 1
    brief = next(f for f in status["functions"] if f["function"] == "brief")
    assert brief["keepalive"]["mode"] == "fixed" and brief["keepalive"]["keepalive_s"] == 0.5
    text = (await ashoal("status", env=env)).stdout
    assert "KEEP-ALIVE" in text and "fixed 300 s (learning, 0 idle times)" in text, text
    assert "fixed 0.5 s" in text
    letters = json.loads((await ashoal("dlq", "list", "--json", env=env)).stdout)
    assert [(d["function"], d["code"]) for d in letters] == [("boom", "function_error")]


async def test_rm_refuses_queued_events_then_removes_everything_it_says(
    nats_server: EmbeddedNats, nc: NATS
) -> None:
    env = {"SHOAL_NATS_URL": nats_server.url}
    await deploy_file(nc, FUNCTIONS / "echo.py", wait=0)  # no controller: events stay queued
    client = Client(nc)
    for i in range(3):
        await client.publish("echo", {"i": i})
    js = nc.jetstream()
    await deadletter.ensure_stream(js)
    await js.publish(deadletter.subject("echo"), b"{}", headers={deadletter.FUNCTION: "echo"})

    refused = await ashoal("rm", "echo", env=env)
    assert refused.returncode == Exit.FAILED and "3 event(s)" in refused.stderr
    spec = await (await kv(js, protocol.FUNCTIONS_BUCKET)).get("echo")  # still there
    assert spec.value

    removed = await ashoal("rm", "echo", "--force", env=env)
    assert removed.returncode == 0, removed.stderr
    assert "removed echo" in removed.stdout and "3 queued event(s) dropped" in removed.stdout
    with pytest.raises(KeyNotFoundError):
        await (await kv(js, protocol.FUNCTIONS_BUCKET)).get("echo")
    with pytest.raises(NotFoundError):
        await js.stream_info(protocol.stream_name("echo"))
    code_sha = removed.stdout.split("code ", 1)[1].split()[0]
    with pytest.raises(KeyNotFoundError):
        await (await kv(js, protocol.CODE_BUCKET)).get(code_sha)
    kept = await js.stream_info(deadletter.STREAM)
    assert kept.state.messages == 1  # dead letters stay unless --purge

    again = await ashoal("rm", "echo", env=env)
    assert again.returncode == Exit.NOT_FOUND


async def test_rm_drains_workers_and_purges_dead_letters(cluster: Cluster) -> None:
    env = {"SHOAL_NATS_URL": cluster.url}
    await cluster.deploy(FUNCTIONS / "echo.py")
    assert await Client(cluster.nc).call("echo", {"warm": 1}, timeout=30) == {"warm": 1}
    assert cluster.launcher.running()  # a worker serves echo
    js = cluster.nc.jetstream()
    await deadletter.ensure_stream(js)
    await js.publish(deadletter.subject("echo"), b"{}", headers={deadletter.FUNCTION: "echo"})

    removed = await ashoal("rm", "echo", "--purge", env=env)
    assert removed.returncode == 0, removed.stderr
    assert "workers drained: 1" in removed.stdout and "dead letters purged: 1" in removed.stdout
    assert "still stopping" not in removed.stdout
    with anyio.fail_after(30):
        await cluster.launcher.wait_all_exited()
    assert (await js.stream_info(deadletter.STREAM)).state.messages == 0


def test_up_uses_a_local_server_that_already_runs(user_dir: Up, nats_server: EmbeddedNats) -> None:
    user_dir.port = nats_server.port
    proc = user_dir.start("--once")
    assert user_dir.finish(proc) == 0, "\n".join(user_dir.lines)
    assert user_dir.lines[0] == f"using the NATS server at nats://127.0.0.1:{nats_server.port}"
    assert '{"text": "hello from shoal"}' in user_dir.lines
    assert leftovers(user_dir.mark) == []  # its S3 server and workers stopped; NATS is not ours
    assert not port_free(nats_server.port)


def test_up_with_several_servers_uses_one_that_answers_and_starts_none(
    user_dir: Up, nats_server: EmbeddedNats
) -> None:
    away = f"nats://127.0.0.1:{user_dir.port}"  # nothing there: a cluster's lost member
    both = f"{away},{nats_server.url}"
    proc = user_dir.start("--once", SHOAL_NATS_URL=both)
    assert user_dir.finish(proc) == 0, "\n".join(user_dir.lines)
    assert user_dir.lines[0] == f"using the NATS server at {both}"
    assert '{"text": "hello from shoal"}' in user_dir.lines
    assert leftovers(user_dir.mark) == []
    assert port_free(user_dir.port)  # no server was started in the lost one's place


async def test_options_after_the_command_and_several_servers(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    away = f"nats://127.0.0.1:{free_port()}"
    env = {"SHOAL_NATS_URL": away}
    # --server after the command; a cluster's URLs, one of them away, comma-separated.
    both = f"{away},{cluster.url}"
    called = await ashoal("invoke", "echo", '{"b": 2}', "--server", both, env=env)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"b": 2}
    # A password in a URL is never printed.
    secret = f"nats://someone:hunter2@127.0.0.1:{free_port()}"
    refused = await ashoal("status", "--server", f"{away},{secret}", "-v")
    assert refused.returncode == Exit.UNREACHABLE
    assert "hunter2" not in refused.stderr and "someone:***@" in refused.stderr


def test_a_file_name_that_is_no_module_name_is_refused(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    bad = tmp_path / "my-func.py"
    bad.write_text("from runtime import function\n\n\n@function\ndef f(event):\n    return 1\n")
    done = shoal("deploy", str(bad), env={"SHOAL_NATS_URL": nats_server.url})
    assert done.returncode == Exit.FAILED, done.stderr
    assert "rename it (e.g. my_func.py)" in done.stderr


def test_a_bad_log_level_is_a_usage_error() -> None:
    done = shoal("status", env={"SHOAL_LOG_LEVEL": "chatty"})
    assert done.returncode == Exit.USAGE and "SHOAL_LOG_LEVEL" in done.stderr
    assert "Traceback" not in done.stderr
