"""Ray nodes as local processes: a head and workers with ports of their own (tests, benchmarks).

Each node is one ``ray start --block`` process in a new session; :meth:`RayNode.stop` ends that
session's process group by its id (never ``ray stop``, which would stop every Ray on the machine).
``netns`` runs the node inside a network namespace (``ip netns exec``): Ray 2.60 maps 127.0.0.1 to
the host's interface address, so a multi-node cluster on one machine stays on loopback only
inside a namespace whose one interface is ``lo``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Ray's per-node ports, each given explicitly so parallel clusters on one machine never collide.
NODE_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                   "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_executable() -> str:
    """The ``ray`` script of this Python environment."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


@dataclass
class RayNode:
    """One Ray node process (``ray start --block``)."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    netns: str | None = None
    proc: subprocess.Popen | None = None
    gcs_address: str | None = None
    dashboard_url: str | None = None
    extra: dict = field(default_factory=dict)

    def start(self) -> "RayNode":
        cmd = [ray_executable(), "start", "--block", *self.args]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """End the node's process group (SIGTERM, then SIGKILL) by its id."""
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if pgid is not None:
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
            try:
                self.proc.wait(timeout=timeout if sig == signal.SIGTERM else 5)
                if sig == signal.SIGTERM and pgid is not None:
                    continue  # also reap what the group left behind
                break
            except subprocess.TimeoutExpired:
                continue


@dataclass
class LocalCluster:
    """A head and any number of worker nodes on this machine; :meth:`close` stops them all."""

    temp_dir: Path
    env: dict[str, str]
    netns: str | None = None
    host: str = "127.0.0.1"
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0

    @classmethod
    def create(cls, *, env: dict[str, str] | None = None, netns: str | None = None,
               temp_root: str | None = None) -> "LocalCluster":
        temp = Path(tempfile.mkdtemp(prefix="rc-", dir=temp_root or "/tmp"))
        full_env = {**os.environ, **(env or {})}
        bin_dir = str(Path(sys.executable).parent)
        full_env["PATH"] = bin_dir + os.pathsep + full_env.get("PATH", "")
        full_env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # the cluster's own token, deliberately: never a ~/.ray/auth_token another Ray left behind
        token = temp / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        full_env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        full_env.pop("RAY_AUTH_TOKEN", None)
        return cls(temp, full_env, netns)

    @property
    def token(self) -> str:
        return Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()

    @property
    def auth_headers(self) -> dict[str, str]:
        """HTTP headers that open the dashboard and the Jobs API of this cluster."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    def _ports(self) -> list[str]:
        """Explicit per-node ports outside a namespace (other Rays share the host's ports);
        inside one the namespace is ours alone and Ray's defaults are safe."""
        if self.netns:
            return []
        out = []
        for flag in NODE_PORT_FLAGS:
            out += [flag, str(free_port())]
        return out

    def start_head(self, *, num_cpus: int = 1, num_gpus: int | None = None, dashboard: bool = True,
                   extra: list[str] | None = None, attempts: int = 3) -> RayNode:
        """Start the head. On a loaded machine Ray's client server can give up waiting for the
        raylet (30 s, not configurable), and ``ray start`` then ends the node: start it again."""
        for attempt in range(attempts):
            try:
                return self._start_head(num_cpus=num_cpus, num_gpus=num_gpus, dashboard=dashboard, extra=extra)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                for node in self.nodes:
                    node.stop()
                self.nodes.clear()
        raise AssertionError("unreachable")

    def _start_head(self, *, num_cpus: int, num_gpus: int | None, dashboard: bool,
                    extra: list[str] | None) -> RayNode:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        args = ["--head", f"--port={self.gcs_port}", f"--node-ip-address={self.host}",
                f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}",
                f"--include-dashboard={'true' if dashboard else 'false'}",
                f"--dashboard-host={self.host}", f"--dashboard-port={self.dashboard_port}",
                *self._ports(), *(extra or [])]
        if num_gpus is not None:
            args.append(f"--num-gpus={num_gpus}")
        node = RayNode(args, dict(self.env), self.temp_dir / "head.log", self.netns).start()
        self.nodes.append(node)
        if not dashboard:
            raise ValueError("LocalCluster asks the dashboard for the nodes: start the head with it")
        self._wait_http(f"{self.dashboard_url}/api/version", timeout=180)
        self.wait_for_nodes(1)
        return node

    def add_worker(self, *, num_cpus: int = 1, resources: str | None = None) -> RayNode:
        index = len(self.nodes)
        args = [f"--address={self.address}", f"--node-ip-address={self.host}", f"--num-cpus={num_cpus}",
                *self._ports()]
        if resources:
            args.append(f"--resources={resources}")
        node = RayNode(args, dict(self.env), self.temp_dir / f"worker{index}.log", self.netns).start()
        self.nodes.append(node)
        self.wait_for_nodes(index + 1)
        return node

    def _in_ns(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def wait_for_nodes(self, n: int, timeout: float = 180.0) -> None:
        """Wait until ``n`` nodes are alive, asked of the dashboard's state API (in a subprocess:
        this process may be outside the namespace)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(not node.alive() for node in self.nodes):
                raise RuntimeError(f"a Ray node exited; see {self.temp_dir}/*.log")
            if self.alive_nodes() >= n:
                return
            time.sleep(1.0)
        raise TimeoutError(f"{n} Ray nodes not up within {timeout:.0f} s; see {self.temp_dir}/*.log")

    def alive_nodes(self) -> int:
        """Nodes the cluster reports alive (0 while the dashboard does not answer)."""
        probe = ("import json, sys, urllib.request\n"
                 "req = urllib.request.Request(sys.argv[1] + '/api/v0/nodes?limit=1000', headers=json.loads(sys.argv[2]))\n"
                 "data = json.load(urllib.request.urlopen(req, timeout=10))\n"
                 "print(sum(1 for n in data['data']['result']['result'] if n.get('state') == 'ALIVE'))")
        try:
            out = subprocess.run(self._in_ns([sys.executable, "-c", probe, self.dashboard_url,
                                               json.dumps(self.auth_headers)]),
                                 env=self.env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return 0
        lines = out.stdout.strip().splitlines()
        return int(lines[-1]) if out.returncode == 0 and lines and lines[-1].isdigit() else 0

    def _wait_http(self, url: str, timeout: float = 60.0) -> None:
        probe = (f"import urllib.request; urllib.request.urlopen(urllib.request.Request({url!r}, "
                 f"headers={self.auth_headers!r}), timeout=5)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(not node.alive() for node in self.nodes):
                raise RuntimeError(f"a Ray node exited; see {self.temp_dir}/*.log")
            if subprocess.run(self._in_ns([sys.executable, "-c", probe]), env=self.env,
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{url} not answering within {timeout:.0f} s")

    def close(self, keep_logs: Path | None = None) -> None:
        """Stop the workers, then the head (each by its process group id); the nodes' and
        services' ``*.log`` files are copied to ``keep_logs`` first when given."""
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.temp_dir.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
