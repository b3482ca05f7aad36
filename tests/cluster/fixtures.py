"""Fixtures for cluster mode (issue 18): the two-node Slurm test cluster, a head ds01d in
cluster mode, and one node agent per node (``ds01d --node``) inside that node's namespaces.

A simulation of two servers with a real scheduler: slurmctld + two slurmd (own network/UTS
namespace, own spool), both agents driving this machine's one Docker engine."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field

import docker
import pytest

from tests.cluster import slurmlab
from tests.integration.harness import BIN, Daemon, ensure_busybox_image, ensure_users, new_daemon

AGENT_PORT = 7817


def _answers(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Cluster:
    head: Daemon
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_agent(self, node: str) -> None:
        log = open(self.head.root / f"agent-{node}.log", "ab")
        self.agents[node] = slurmlab.run_in_node(
            node, [str(BIN / "ds01d"), "--root", str(self.head.root), "--node", node], stdout=log, stderr=log)
        deadline = time.time() + 20
        while not _answers(slurmlab.NODES[node], AGENT_PORT):
            if self.agents[node].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"agent {node} did not come up:\n{self.agent_log(node)}")
            time.sleep(0.1)

    def kill_agent(self, node: str) -> None:
        p = self.agents.pop(node, None)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)
        # the exec wrapper may leave the agent itself running: make sure the port is closed
        subprocess.run(["pkill", "-9", "-f", "--", f"--root {self.head.root} --node {node}"], check=False)
        deadline = time.time() + 10
        while _answers(slurmlab.NODES[node], AGENT_PORT) and time.time() < deadline:
            time.sleep(0.1)

    def agent_log(self, node: str, n: int = 30) -> str:
        try:
            return "\n".join((self.head.root / f"agent-{node}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def diagnostics(self) -> str:
        parts = [f"--- head log ---\n{self.head.log_tail(60)}"]
        for node in slurmlab.NODES:
            parts.append(f"--- agent {node} log ---\n{self.agent_log(node)}")
        parts.append("--- squeue ---\n" + slurmlab.slurm("squeue", "-o", "%i %u %T %R %N %b %j", check=False).stdout)
        return "\n".join(parts)


@pytest.fixture(scope="session")
def slurm_cluster():
    why = slurmlab.unavailable()
    if why:  # CI installs Slurm and runs as root: this must not be skipped silently there
        pytest.fail(f"the Slurm test cluster cannot run: {why}")
    ensure_users()
    ensure_busybox_image(docker.from_env())
    slurmlab.up()
    yield slurmlab
    slurmlab.down()


@pytest.fixture(scope="module")  # per module: no head and agents polling while other suites run
def cluster(slurm_cluster):
    d = new_daemon()
    d.config.update({
        "cluster": {"engine": "slurm", "slurm_conf": str(slurmlab.SLURM_CONF), "agent_port": AGENT_PORT,
                    "place_timeout": 15, "drain_after": 3, "agent_timeout": 3,
                    "slurm_include": str(slurmlab.DIR / "ds01-managed.conf")},
        "daemon": {**d.config["daemon"], "tick_interval": 1},
        # idle reclaim in seconds for one user only (the idle test's); others keep 2 h
        "users": {"ds01-adm": {"idle_timeout": "6s"}},
        "lifecycle": {"startup_grace": 0, "busy_factor": 1.0, "stop_grace": 1},
        # the test nodes declare 8 CPUs and 16000 MB each; 2 GPUs per user so one user can fill a node
        "defaults": {"cpus": 1, "memory": "512m", "max_gpus": 2, "max_gpus_per_container": 2, "max_containers": 3,
                     "max_runtime": "2h"},
    })
    c = Cluster(head=d)
    d.write_config()
    for node in slurmlab.NODES:
        c.start_agent(node)
    d.start()
    yield c
    for node in list(c.agents):
        c.kill_agent(node)
    d.destroy(docker.from_env())
    for j in slurmlab.squeue():  # nothing of ours left in Slurm
        if j["name"].startswith(f"ds01-{d.instance}-"):
            slurmlab.slurm("scancel", j["id"], check=False)
