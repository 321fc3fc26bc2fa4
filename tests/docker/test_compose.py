"""compose.yaml + compose.test.yaml (locally built nats and SeaweedFS images) serve an event
published from the host, end to end, and keep the events JetStream stored across
`compose down` and `up` (the named volumes stay)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError

from runtime import Client, protocol
from runtime.errors import FunctionNotFound, WorkerUnavailable
from runtime.nats_util import NatsAuth, NatsRefused, connect

from .conftest import REPO, ensure_images

pytestmark = pytest.mark.anyio

IMAGES = ("shoal-nats", "shoal-weed", "shoal-controller")
PORTS = (4222, 8222, 9000, 9001)
URL = "nats://127.0.0.1:4222"
COMPOSE_TIMEOUT = 180.0  # seconds for one compose command (up builds nothing: images exist)
# `down -t`: nats-server stops on SIGTERM in well under a second; `weed server` ignores it and
# would hold every `down` for its whole grace period.
GRACE = "2"


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Compose:
    """One throwaway compose project over compose.yaml + compose.test.yaml."""

    cmd: list[str]

    def run_sync(self, *args: str) -> None:
        done = subprocess.run(
            [*self.cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT
        )
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stderr[-3000:]}"

    async def run(self, *args: str) -> None:
        with anyio.fail_after(COMPOSE_TIMEOUT):
            done = await anyio.run_process([*self.cmd, *args], cwd=REPO, check=False)
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stderr.decode()[-3000:]}"


@pytest.fixture
def compose(docker_client: Any) -> Iterator[Compose]:
    exe = shutil.which("docker-compose")
    base = [exe] if exe else ["docker", "compose"]
    if subprocess.run([*base, "version"], capture_output=True).returncode != 0:
        pytest.skip(
            "neither docker-compose nor the compose plugin is installed: "
            "run docker/ensure-engine.sh (installs docker-compose; needs root)"
        )
    ensure_images(docker_client, *IMAGES)
    busy = [p for p in PORTS if _port_busy(p)]
    if busy:
        pytest.skip(f"ports {busy} are taken (another compose stack running?)")
    project = "shoaltest" + uuid.uuid4().hex[:6]
    stack = Compose([*base, "-p", project, "-f", "compose.yaml", "-f", "compose.test.yaml"])
    try:
        stack.run_sync("up", "-d")
        yield stack
    finally:  # -v: the volumes go too
        subprocess.run(
            [*stack.cmd, "down", "-v", "-t", GRACE],
            cwd=REPO,
            capture_output=True,
            timeout=COMPOSE_TIMEOUT,
        )


# compose.yaml's development defaults for the three roles of deploy/nats/nats-server.conf.
OPERATOR = NatsAuth(user="shoal-controller", password="controller-dev-secret")
APP = NatsAuth(
    user="shoal-client", password="client-dev-secret", inbox_prefix="_INBOX.shoal-client"
)


async def _connect(auth: NatsAuth = OPERATOR) -> NATS:
    """The operator's view (streams, results) unless told otherwise."""
    with anyio.fail_after(30):
        return await connect(URL, name="compose-test", auth=auth)  # retries while NATS starts


def _connz() -> Any:
    """The server's connections, with the user each authenticated as (monitoring port)."""
    with urllib.request.urlopen("http://127.0.0.1:8222/connz?auth=1", timeout=10) as r:
        return json.load(r)


async def _call_echo(client: Client, event: Any) -> Any:
    """The controller (`shoal up`) deploys ./functions once NATS answers it."""
    with anyio.fail_after(90):
        while True:
            try:
                return await client.call("echo", event, timeout=30)
            except (FunctionNotFound, WorkerUnavailable):
                await anyio.sleep(0.5)


async def test_compose_serves_an_event_from_the_host(compose: Compose) -> None:
    nc = await _connect()
    try:
        client = Client(nc)
        assert await _call_echo(client, {"text": "hi"}) == {"text": "hi"}
        rid = await client.publish("echo", {"durable": True}, request_id="compose-1")
        assert (await client.wait_result(rid, timeout=30)).unwrap() == {"durable": True}
    finally:
        await nc.close()
    # The workers the controller spawned connect under the worker role, not the controller's.
    connz = await anyio.to_thread.run_sync(_connz)
    users = {(c.get("name", ""), c.get("authorized_user", "")) for c in connz["connections"]}
    assert {u for n, u in users if n.startswith("shoal-worker-")} == {"shoal-worker"}, users
    # An application under the client role invokes; without credentials, nothing.
    app = await _connect(APP)
    try:
        assert await Client(app).call("echo", {"app": 1}, timeout=30) == {"app": 1}
    finally:
        await app.close()
    with anyio.fail_after(30), pytest.raises(NatsRefused, match="Authorization Violation"):
        await connect(URL, name="anonymous", auth=NatsAuth())


async def test_compose_down_and_up_keeps_stored_events(compose: Compose) -> None:
    stream = protocol.stream_name("echo")
    run = uuid.uuid4().hex[:8]
    events = {f"kept-{run}-{n}": {"n": n, "run": run} for n in range(5)}
    nc = await _connect()
    try:
        await _call_echo(Client(nc), {"warm": True})  # deployed: echo's stream exists
        # No controller, so no worker: what is published now can only wait in JetStream.
        await compose.run("stop", "-t", "10", "controller")
        js = nc.jetstream()
        before = (await js.stream_info(stream)).state.messages  # 0, or an unacked warm-up
        client = Client(nc)
        for rid, event in events.items():
            await client.publish("echo", event, request_id=rid)
        assert (await js.stream_info(stream)).state.messages == before + len(events)
    finally:
        await nc.close()

    await compose.run("down", "-t", GRACE)  # without -v: the named volumes stay
    await compose.run("up", "-d", "nats")  # NATS alone first: nothing consumes the events
    nc = await _connect()
    try:
        js = nc.jetstream()
        with anyio.fail_after(30):
            while True:  # JetStream answers once it has recovered its streams
                try:
                    info = await js.stream_info(stream)
                    break
                except (NoRespondersError, ServiceUnavailableError, NatsTimeout):
                    await anyio.sleep(0.2)
        assert info.state.messages == before + len(events)
        state = info.state
        stored = {}
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            stored[(msg.headers or {}).get(protocol.MSG_ID)] = json.loads(msg.data or b"")
        assert {rid: stored.get(rid) for rid in events} == events

        # The whole stack again: the controller serves the events that waited.
        await compose.run("up", "-d")
        client = Client(nc)
        for rid, event in events.items():
            assert (await client.wait_result(rid, timeout=90)).unwrap() == event
        with anyio.fail_after(30):  # each acked once its result is stored: gone
            while (await js.stream_info(stream)).state.messages:  # noqa: ASYNC110
                await anyio.sleep(0.2)
    finally:
        await nc.close()
