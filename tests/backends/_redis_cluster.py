"""A throwaway three-master Redis Cluster on loopback, started once per test session.

``cluster_url(config)`` starts it on first use (``redis-server`` processes on
free ports, then ``redis-cli --cluster create``), registers its teardown with
pytest, and returns a ``redis://...?cluster=true`` URL. Without ``redis-server``
the caller's test is skipped, or fails under ``CI=true``.

``start_cluster(..., replicas=1)`` starts a cluster of its own with a replica
per master, for a test that kills nodes (``LocalCluster.procs`` by port).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MASTERS = 3


class LocalCluster:
    """Redis servers in cluster mode, and how to stop them."""

    def __init__(self, ports: list[int], procs: list[subprocess.Popen[bytes]], home: Path):
        self.ports = ports
        self.procs = procs
        self.home = home

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0?cluster=true"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    # Each node also listens on port + 10000 (the cluster bus).
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def _cli(cli: str, *args: str, timeout: float = 10) -> str:
    done = subprocess.run([cli, *args], capture_output=True, timeout=timeout, check=False)
    return done.stdout.decode() + done.stderr.decode()


def start_cluster(
    server: str, cli: str, *, replicas: int = 0, node_timeout: int | None = None
) -> LocalCluster:
    """Start ``MASTERS`` nodes, join them, and wait until the cluster serves every slot.

    Args:
        server: the ``redis-server`` executable.
        cli: the ``redis-cli`` executable.
        replicas: replicas per master; with some, it also waits until each
            replica is in sync with its master.
        node_timeout: ``cluster-node-timeout`` in milliseconds (Redis' default
            when ``None``): how long a node may not answer before it is failed
            over.
    """
    home = Path(tempfile.mkdtemp(prefix="asyncq-cluster-"))
    ports = _free_ports(MASTERS * (1 + replicas))
    extra = [] if node_timeout is None else ["--cluster-node-timeout", str(node_timeout)]
    procs = [
        subprocess.Popen(
            [
                server,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(home / f"nodes-{port}.conf"),
                "--dir", str(home),
                "--daemonize", "no",
                "--save", "",
                "--appendonly", "no",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]  # fmt: skip
    cluster = LocalCluster(ports, procs, home)
    try:
        deadline = time.monotonic() + 15
        for port in ports:
            while "PONG" not in _cli(cli, "-p", str(port), "ping"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start")
                time.sleep(0.05)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        out = _cli(
            cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas),
            "--cluster-yes",
            timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        for port in ports:
            while "cluster_state:ok" not in _cli(cli, "-p", str(port), "cluster", "info"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not become ready:\n{out}")
                time.sleep(0.1)
        for port in ports if replicas else ():
            while True:
                info = _cli(cli, "-p", str(port), "info", "replication")
                if "role:master" in info or "master_link_status:up" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica on port {port} did not sync:\n{info}")
                time.sleep(0.1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


_cluster: LocalCluster | None = None


def executables() -> tuple[str, str]:
    """``redis-server`` and ``redis-cli``; without them the test skips (fails under ``CI=true``)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        msg = "a Redis Cluster needs redis-server and redis-cli (apt install redis-server)"
        if IN_CI:
            pytest.fail(f"{msg} (CI=true: integration tests must run)")
        pytest.skip(msg)
    return server, cli


def cluster_url(config: pytest.Config) -> str:
    """The URL of the session's cluster, started on first use and stopped when pytest ends."""
    global _cluster
    if _cluster is None:
        server, cli = executables()
        _cluster = start_cluster(server, cli)
        config.add_cleanup(_stop)
    return _cluster.url


def _stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None
