"""A real Redis Cluster on loopback for tests: Debian's ``redis-server``, 3 masters and 3
replicas on free ports in a temporary folder, a short node timeout so that a failover takes a
few seconds.

Started ready: every slot covered (``cluster_state:ok`` on every node) and every replica
attached with its first sync done (``master_link_status:up``), since a replica killed out
from under its first sync never takes over. Stopped by the pids it wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import psutil
import redis

from huddle.redis_server import find_redis_server

MASTERS: Final = 3
# Milliseconds a master may be unreachable before its replica takes over.
NODE_TIMEOUT_MS: Final = 2000
READY_TIMEOUT_S: Final = 30.0
# Each node also listens on its port + 10000 for the cluster bus.
BUS_OFFSET: Final = 10000
CLUSTER_SLOTS: Final = 16384


@dataclass
class ClusterNode:
    port: int
    folder: Path

    @property
    def pid(self) -> int | None:
        try:
            return int((self.folder / "pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def info(self, section: str) -> dict[str, str]:
        """``INFO SECTION``, or ``CLUSTER INFO`` for "cluster", as text fields."""
        client = self.client()
        try:
            if section == "cluster":
                reply: object = client.cluster("INFO")
            else:
                reply = client.info(section)
        finally:
            client.close()
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k: v.strip() for k, v in pairs}


@dataclass
class RedisCluster:
    folder: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The node's ``REDIS_URL`` for this cluster (every node as a seed)."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{seeds}"

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.pid and self._role(n) == "master"]

    def _role(self, node: ClusterNode) -> str:
        try:
            return node.info("replication").get("role", "")
        except redis.RedisError:
            return ""

    def start(self, binary: str | None = None) -> None:
        try:
            self._start(find_redis_server(binary))
        except BaseException:
            self.stop()
            raise

    def _start(self, server: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(MASTERS * 2):
            port = _free_port_pair()
            folder = self.folder / str(port)
            folder.mkdir()
            self.nodes.append(ClusterNode(port, folder))
            self._launch(server, self.nodes[-1])
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in self.nodes:
            self._wait(deadline, lambda node=node: self._pings(node), f"{node.port} answers")
        self._create(deadline)
        self.wait_ready(deadline - time.monotonic())

    def _create(self, deadline: float) -> None:
        """Make the started nodes one cluster, as ``redis-cli --cluster create ...
        --cluster-replicas 1`` does, without its one-second sleeps while the nodes meet:
        the slots split evenly over the first ``MASTERS`` nodes, each a config epoch of its
        own, every node met, then each of the others the replica of one master."""
        masters, replicas = self.nodes[:MASTERS], self.nodes[MASTERS:]
        share = CLUSTER_SLOTS // MASTERS
        for i, node in enumerate(masters):
            last = CLUSTER_SLOTS - 1 if i == MASTERS - 1 else (i + 1) * share - 1
            with contextlib.closing(node.client()) as client:
                client.cluster("ADDSLOTSRANGE", i * share, last)
                client.cluster("SET-CONFIG-EPOCH", i + 1)
        # Each meets every other itself: met through gossip alone takes seconds.
        for i, node in enumerate(self.nodes):
            with contextlib.closing(node.client()) as client:
                for other in self.nodes[i + 1 :]:
                    client.cluster("MEET", "127.0.0.1", other.port)
        everyone = str(len(self.nodes))

        def met() -> bool:
            return all(n.info("cluster").get("cluster_known_nodes") == everyone for n in self.nodes)

        self._wait(deadline, met, "nodes met")
        for master, replica in zip(masters, replicas, strict=True):
            master_id = self.node_id(master)
            self._wait(deadline, lambda r=replica, m=master_id: self._replicate(r, m), "replicas")

    def _replicate(self, replica: ClusterNode, master_id: str) -> bool:
        """Make ``replica`` a replica of the master ``master_id``; False while it does not know
        that id yet (met, but the handshake not over: counted as known all the same)."""
        with contextlib.closing(replica.client()) as client:
            try:
                client.cluster("REPLICATE", master_id)
            except redis.ResponseError as exc:
                if "Unknown node" not in str(exc):
                    raise
                return False
        return True

    def _launch(self, server: str, node: ClusterNode) -> None:
        """Start ``node``'s redis-server (daemonized, its pid in its folder)."""
        subprocess.run(
            [
                server,
                "--port",
                str(node.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node.folder / "nodes.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--appendonly",
                "yes",
                "--dir",
                str(node.folder),
                "--daemonize",
                "yes",
                "--pidfile",
                str(node.folder / "pid"),
                "--logfile",
                str(node.folder / "log"),
                "--save",
                "",
                # Stopped at once (the tests' end): a master whose replica is behind (one
                # resyncing after a failover) would wait for it up to 10 s.
                "--shutdown-on-sigterm",
                "now",
                # A replica's first sync starts at once (by default a master waits 5 s
                # for more replicas to share it).
                "--repl-diskless-sync-delay",
                "0",
                # Clients learn of a replica once its offset is past 0: a master that
                # has nothing to send moves it with its pings to replicas (10 s apart by
                # default).
                "--repl-ping-replica-period",
                "1",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every live node sees the cluster ok and every live replica has synced."""
        deadline = time.monotonic() + timeout
        self._wait(deadline, self._ready, "cluster ready")

    def _ready(self) -> bool:
        live = [n for n in self.nodes if n.pid and self._pings(n)]
        replicas = 0
        for node in live:
            if node.info("cluster").get("cluster_state") != "ok":
                return False
            replication = node.info("replication")
            if replication.get("role") == "slave":
                if replication.get("master_link_status") != "up":
                    return False
                replicas += 1
        if replicas < len(live) - MASTERS:
            return False
        # CLUSTER SLOTS lists a replica only once its master has heard of its replication
        # offset (a moment after its sync): clients learn of replicas from it.
        for node in live:
            client = node.client()
            try:
                ranges = client.cluster("SLOTS")
            finally:
                client.close()
            if replicas and any(len(r) < 4 for r in ranges):
                return False
        return True

    @staticmethod
    def _pings(node: ClusterNode) -> bool:
        try:
            client = node.client()
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    @staticmethod
    def _wait(deadline: float, ready: object, what: str) -> None:
        assert callable(ready)
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster: {what} timed out")
            time.sleep(0.05)

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.masters():
            client = node.client()
            try:
                client.flushall()
            finally:
                client.close()

    def node_id(self, node: ClusterNode) -> str:
        client = node.client()
        try:
            reply = client.cluster("MYID")
        finally:
            client.close()
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, master's port) of every range, as the cluster says now."""
        client = self.masters()[0].client()
        try:
            ranges = client.cluster("SLOTS")
        finally:
            client.close()
        return [(int(first), int(last), int(master[1])) for first, last, master, *_ in ranges]

    def owner(self, slot: int) -> ClusterNode:
        """The master that serves ``slot`` now."""
        for first, last, port in self.slot_ranges():
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"slot {slot} is not served")

    def move_slot(self, slot: int, to: ClusterNode) -> None:
        """Migrate ``slot`` with its keys to the master ``to``, as ``redis-cli --cluster
        reshard`` does slot by slot."""
        source = self.owner(slot)
        if source is to:
            return
        src_id, dst_id = self.node_id(source), self.node_id(to)
        src, dst = source.client(), to.client()
        try:
            dst.cluster("SETSLOT", slot, "IMPORTING", src_id)
            src.cluster("SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.cluster("GETKEYSINSLOT", slot, 100):
                src.migrate("127.0.0.1", to.port, keys, 0, 5000)
            for master in self.masters():
                client = master.client()
                try:
                    client.cluster("SETSLOT", slot, "NODE", dst_id)
                finally:
                    client.close()
        finally:
            src.close()
            dst.close()

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        found = []
        for node in self.nodes:
            if node is master or not node.pid:
                continue
            replication = node.info("replication")
            if replication.get("role") == "slave" and replication.get("master_port") == str(
                master.port
            ):
                found.append(node)
        return found

    @contextlib.contextmanager
    def paused(self, node: ClusterNode) -> Iterator[None]:
        """Stop a node's process (SIGSTOP) for the block: alive, but it answers nothing and
        replicates nothing. Kept past the node timeout, the others fail it (its replica takes
        over, and it rejoins as a replica once let go)."""
        pid = node.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill(self, node: ClusterNode) -> None:
        """``kill -9`` one node, as a machine that vanished."""
        pid = node.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            (node.folder / "pid").unlink(missing_ok=True)

    def restart(self, node: ClusterNode) -> None:
        """Start a node killed earlier again, on its port and with its cluster config."""
        assert node.pid is None, "the node runs"
        self._launch(find_redis_server(), node)
        deadline = time.monotonic() + READY_TIMEOUT_S
        self._wait(deadline, lambda: self._pings(node), f"{node.port} answers")

    def stop(self) -> None:
        # Read first: a redis-server removes its pid file as it exits.
        pids = [pid for pid in (n.pid for n in self.nodes) if pid is not None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _free_port_pair() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs. An exited daemon is a zombie until whoever adopted it
    reaps it, which some init processes do only every few seconds (2 s here): it counts as
    gone."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str]) -> int:
    """``python -m tests.redis_cluster [PYTEST ARGS]``: pytest with every Redis-backed test on
    a cluster of its own (``HUDDLE_TEST_REDIS_URL``), which is stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="huddle-cluster-") as folder:
        cluster = RedisCluster(Path(folder))
        cluster.start()
        try:
            env = {**os.environ, "HUDDLE_TEST_REDIS_URL": cluster.url}
            command = [sys.executable, "-m", "pytest", *argv]
            return subprocess.run(command, env=env, stdin=subprocess.DEVNULL).returncode
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
