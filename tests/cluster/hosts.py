"""Hosts on real separate network stacks: Linux network namespaces on one machine.

Each host is a network namespace with one veth pair to a bridge in the root namespace, an
address on a private /24, and its own loopback. A host runs one node of a three-node
nats-server cluster with JetStream (routes between the nodes, stores under the test's tmp
folder) and one ``shoal controller`` with the process launcher, whose workers are its
children and so share its namespace. The controller's ``SHOAL_NATS_URL`` names only its own
node; nats-py learns the others from the node's INFO, as it would on real hosts. One S3
server (SeaweedFS) listens on the bridge's address in the root namespace, where the test
itself runs; every host reaches it, and the test reaches every node.

Everything here is named with :data:`PREFIX` and this process's pid, so that a run that was
killed before its clean-up is cleaned up by the next (:func:`clean_stale`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from controller.embedded import nats_server_binary
from controller.embedded_s3 import EmbeddedS3
from runtime.wire.connection import connect

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nats.aio.client import Client as NATS

PREFIX = "shoalc"  # namespaces shoalc-<pid>-<host>, links shc<pid><host>, bridge shc<pid>br
LINK = "shc"
HOSTS = ("a", "b", "c")
NATS_PORT = 4222
ROUTE_PORT = 6222
REPO = Path(__file__).parent.parent.parent
# Quick heartbeats and passes keep the runs short; the behaviour is the production code's.
CONTROLLER_ENV = {
    "SHOAL_HEARTBEAT": "0.5",
    "SHOAL_TICK": "0.2",
    "SHOAL_STALE_AFTER": "3",
    "SHOAL_LOG_LEVEL": "WARNING",
    "SHOAL_METRICS_ADDR": "off",
}


class NoNamespaces(Exception):
    """Network namespaces cannot be made here (not root, no ``ip``, no veth or bridge)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def _kill_namespace(ns: str, timeout: float = 20.0) -> None:
    """SIGKILL every process in ``ns`` and wait until none is left (bounded)."""
    deadline = time.monotonic() + timeout
    while pids := _ns_pids(ns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {ns} survive SIGKILL")
        time.sleep(0.05)  # the kernel reaps them; nothing to wait on from here


def clean_stale() -> None:
    """Remove namespaces and links left by runs whose process is gone."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit():
            if not _alive(int(parts[1])):
                _kill_namespace(name)
                _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        link = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        digits = link[len(LINK) :].rstrip("abcnr")
        if link.startswith(LINK) and digits.isdigit() and not _alive(int(digits)):
            _ip("link", "del", link, check=False)


@dataclass
class Host:
    name: str  # a, b or c; the NATS node and the controller are named host-<name>
    ns: str
    address: str
    nats: subprocess.Popen[bytes] | None = None
    controller: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"host-{self.name}"

    @property
    def url(self) -> str:
        return f"nats://{self.address}:{NATS_PORT}"


@dataclass
class Hosts:
    """Three namespaced hosts, their NATS cluster, and the shared S3 server."""

    root: Path
    pid: int = field(default_factory=os.getpid)
    hosts: dict[str, Host] = field(default_factory=dict)
    s3: EmbeddedS3 | None = None
    _links: list[str] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    @property
    def subnet(self) -> str:
        return f"10.231.{self.pid % 250}"

    @property
    def bridge(self) -> str:
        return f"{LINK}{self.pid}br"

    def urls(self, first: str) -> str:
        """Every node's URL, host ``first``'s first (pass ``dont_randomize`` to keep it so)."""
        order = [first, *(h for h in self.hosts if h != first)]
        return ",".join(self.hosts[h].url for h in order)

    # -- the network ----------------------------------------------------------------------

    def make_network(self) -> None:
        if os.geteuid() != 0:
            raise NoNamespaces("network namespaces need root")
        if shutil.which("ip") is None:
            raise NoNamespaces("no `ip` command (iproute2)")
        clean_stale()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except (OSError, subprocess.CalledProcessError) as e:
            raise NoNamespaces(f"cannot make a bridge: {getattr(e, 'stderr', e)}") from e
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(HOSTS):
            ns = f"{PREFIX}-{self.pid}-{name}"
            outer, inner = f"{LINK}{self.pid}{name}", f"{LINK}{self.pid}{name}n"
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as e:
                raise NoNamespaces(f"cannot make a network namespace: {e.stderr}") from e
            self._namespaces.append(ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            self._links.append(outer)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("link", "set", inner, "netns", ns)
            address = f"{self.subnet}.{11 + i}"
            inside = ("netns", "exec", ns, "ip")
            _ip(*inside, "addr", "add", f"{address}/24", "dev", inner)
            _ip(*inside, "link", "set", inner, "up")
            _ip(*inside, "link", "set", "lo", "up")
            self.hosts[name] = Host(name, ns, address)

    # -- NATS -----------------------------------------------------------------------------

    def start_nats(self, host: Host) -> None:
        store = self.root / host.node / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f"nats-route://{h.address}:{ROUTE_PORT}" for h in self.hosts.values())
        conf = self.root / host.node / "nats.conf"
        conf.write_text(
            f"server_name: {host.node}\n"
            f"listen: {host.address}:{NATS_PORT}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{ name: shoal, listen: {host.address}:{ROUTE_PORT}, routes: [{routes}] }}\n"
        )
        with (self.root / host.node / "nats.log").open("wb") as log:  # the child keeps its own
            host.nats = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, nats_server_binary(), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_jetstream(self, timeout: float = 60.0) -> None:
        """Until every node answers JetStream requests (the cluster has a meta leader)."""
        with anyio.fail_after(timeout):
            for host in self.hosts.values():
                nc = await connect(host.url, name="cluster-probe")
                try:
                    while True:
                        try:
                            await nc.jetstream().account_info()
                            break
                        except Exception:
                            await anyio.sleep(0.2)  # no meta leader elected yet
                finally:
                    await nc.close()

    def kill_nats(self, host: Host) -> None:
        assert host.nats is not None
        host.nats.kill()
        host.nats.wait(10)

    # -- S3 -------------------------------------------------------------------------------

    def start_s3(self) -> None:
        self.s3 = EmbeddedS3(self.root / "s3", host=f"{self.subnet}.1").start()

    # -- controllers ----------------------------------------------------------------------

    def controller_env(self, host: Host, **more: str) -> dict[str, str]:
        assert self.s3 is not None
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        return {
            **os.environ,
            **CONTROLLER_ENV,
            **self.s3.env(),
            "PYTHONPATH": pythonpath,
            "SHOAL_NATS_URL": host.url,  # its own node only
            "SHOAL_CONTROLLER_ID": host.node,
            "SHOAL_HOST_NAME": host.node,  # one machine: placement would see one host
            **more,
        }

    def start_controller(self, host: Host, **env: str) -> None:
        data = self.root / host.node / "data"
        data.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "controller.cli", "controller", "--data", str(data)]
        with (self.root / host.node / "controller.log").open("wb") as log:
            host.controller = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *command],
                env=self.controller_env(host, **env),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_host(self, host: Host) -> None:
        """SIGKILL everything on ``host``: its NATS node, its controller, every worker."""
        _kill_namespace(host.ns)
        for p in (host.nats, host.controller):
            if p is not None:
                p.wait(10)

    # -- the end --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started here, whatever state it is in."""
        controllers = [h.controller for h in self.hosts.values() if h.controller is not None]
        for p in controllers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # its workers drain and stop with it
        for p in controllers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(15)
        for ns in self._namespaces:
            _kill_namespace(ns)
            _ip("netns", "del", ns, check=False)
        for h in self.hosts.values():
            for p in (h.nats, h.controller):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(10)
        for link in self._links:
            _ip("link", "del", link, check=False)
        if self.s3 is not None:
            self.s3.stop()


@contextlib.contextmanager
def namespaced_hosts(root: Path) -> Iterator[Hosts]:
    """Three hosts with their network, all stopped and removed at the end."""
    hosts = Hosts(root)
    try:
        hosts.make_network()
        yield hosts
    finally:
        hosts.stop()


async def cluster_connection(hosts: Hosts, first: str, name: str) -> NATS:
    """A connection from the root namespace, to host ``first``'s node while it is up."""
    return await connect(hosts.urls(first), name=name, dont_randomize=True)
