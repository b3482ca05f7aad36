"""Cluster mode (issue 18): what a node agent and DS01's Slurm partition promise against an
unprivileged user who can reach the agent's port and run Slurm's and MUNGE's own clients."""

from __future__ import annotations

import http.client
import json
import subprocess
import time

import docker
import pytest

from ds01.models.container import spec_to_dict
from ds01.policy.placement import request_digest
from ds01.runtime import munge
from tests.cluster import slurmlab
from tests.integration.harness import USERS, ok, unique_project

NODE = "ds01n1"
ADDR = slurmlab.NODES[NODE]
PORT = 7817


def _send(method: str, path: str, body: bytes = b"", cred: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(ADDR, PORT, timeout=10)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if cred is not None:
        headers["X-DS01-Credential"] = cred
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, {"raw": data.decode(errors="replace")}


def _head_cred(method: str, path: str, body: bytes = b"", node: str = NODE) -> str:
    return munge.encode(request_digest(method, path, body, node))  # this test runs as root, like the head


def _user_cred(user: str, method: str, path: str, body: bytes = b"") -> str:
    p = subprocess.run(["runuser", "-u", USERS[user], "--", "munge"],
                       input=request_digest(method, path, body, NODE).encode(), capture_output=True, check=True)
    return p.stdout.decode().strip()


def _refused(status: int, out: dict) -> bool:
    return status >= 400 and out.get("error", {}).get("code") in ("permission_denied", "not_found")


def test_agent_refuses_a_request_without_credential(cluster):
    status, out = _send("GET", "/v1/node")
    assert _refused(status, out), (status, out)


def test_agent_refuses_a_users_credential(cluster):
    status, out = _send("GET", "/v1/node", cred=_user_cred("bob", "GET", "/v1/node"))
    assert _refused(status, out) and "only the head" in out["error"]["message"], out


def test_agent_refuses_a_credential_made_for_another_request(cluster):
    cred = _head_cred("GET", "/v1/node")
    status, out = _send("POST", "/v1/list", b'{"selector": {}}', cred=cred)
    assert _refused(status, out) and "another request" in out["error"]["message"], out


def test_agent_refuses_a_credential_made_for_another_node(cluster):
    status, out = _send("GET", "/v1/node", cred=_head_cred("GET", "/v1/node", node="ds01n2"))
    assert _refused(status, out), out


def test_agent_drops_a_body_without_a_sane_length(cluster):
    """Nothing is read before the request shows a credential and a bounded length."""
    import socket

    with socket.create_connection((ADDR, PORT), timeout=10) as s:
        s.sendall(b"POST /v1/list HTTP/1.1\r\nHost: x\r\nX-DS01-Credential: x\r\nContent-Length: -1\r\n\r\n"
                  + b"A" * 65536)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0], reply[:200]


def test_agent_refuses_a_replayed_credential(cluster):
    cred = _head_cred("GET", "/v1/node")
    assert _send("GET", "/v1/node", cred=cred)[0] == 200
    status, out = _send("GET", "/v1/node", cred=cred)  # captured on the wire, sent again
    assert _refused(status, out), out


def test_agent_never_creates_for_a_job_of_another_user(cluster):
    """Even with the head's credential, a create must match a running job of the spec's user."""
    p = unique_project("steal")
    try:
        ok(cluster.head.run("bob", "container-deploy", p, "--background", timeout=60))
        client = docker.from_env()
        (bobs,) = client.containers.list(filters={"label": [f"ds01.project={p}",
                                                            f"ds01.instance={cluster.head.instance}"]})
        job = int(bobs.labels["ds01.slurm_job"])
        node = bobs.labels["ds01.node"]
        # alice's spec (as the head would build it) attached to bob's running job
        from ds01.models.config import Config
        from ds01.policy.containers import build_spec
        from ds01.policy.limits import effective_limits

        class Alice:
            uid, gid, name, group = 1001, 1002, "ds01-alice", "ds01-alice"

        cfg = Config()
        spec = build_spec(cfg, Alice(), "x", "ds01-test/busybox:latest", effective_limits(cfg, "ds01-alice", set()),
                          "/home/ds01-alice/workspace", time.time(), cluster.head.instance)
        body = json.dumps({"spec": spec_to_dict(spec), "job": job}).encode()
        conn_addr = slurmlab.NODES[node]
        before = len(client.containers.list(all=True))
        c = http.client.HTTPConnection(conn_addr, PORT, timeout=10)
        c.request("POST", "/v1/containers", body=body,
                  headers={"X-DS01-Credential": _head_cred("POST", "/v1/containers", body, node),
                           "Content-Length": str(len(body))})
        r = c.getresponse()
        out = json.loads(r.read())
        assert r.status == 403 and "belongs to uid 1002" in out["error"]["message"], out
        assert len(client.containers.list(all=True)) == before
    finally:
        cluster.head.run("bob", "container-retire", p, "--yes", timeout=60)


def test_users_cannot_submit_into_ds01s_partition(cluster):
    p = subprocess.run(["runuser", "-u", USERS["bob"], "--", "sbatch", "-p", "ds01", "--wrap", "sleep 60"],
                       capture_output=True, text=True, env=slurmlab.env())
    assert p.returncode != 0 and "managed by DS01" in (p.stderr + p.stdout), p
    # without -p the job goes to the default partition, which is DS01's on the test cluster
    p = subprocess.run(["runuser", "-u", USERS["bob"], "--", "sbatch", "--wrap", "sleep 60"],
                       capture_output=True, text=True, env=slurmlab.env())
    assert p.returncode != 0 and "managed by DS01" in (p.stderr + p.stdout), p


def test_users_cannot_change_their_ds01_job(cluster):
    """The job runs as the user (fair share, accounting), but only DS01 may change it."""
    p = unique_project("mod")
    try:
        ok(cluster.head.run("bob", "container-deploy", p, "--background", "--gpus", "1", timeout=60))
        job = next(j["id"] for j in slurmlab.squeue("ds01-bob"))
        r = subprocess.run(["runuser", "-u", USERS["bob"], "--", "scontrol", "update", f"JobId={job}",
                            "TimeLimit=UNLIMITED"], capture_output=True, text=True, env=slurmlab.env())
        assert r.returncode != 0, r
        assert "managed by DS01" in (r.stderr + r.stdout) or "denied" in (r.stderr + r.stdout).lower(), r
    finally:
        cluster.head.run("bob", "container-retire", p, "--yes", timeout=60)


def test_another_users_container_on_a_node_is_not_found_through_the_head(cluster):
    p = unique_project("priv")
    try:
        ok(cluster.head.run("alice", "container-deploy", p, "--background", timeout=60))
        r = cluster.head.run("bob", "container-run", p, "--", "id")
        assert r.returncode == 4 and p in r.stderr, r  # not found, exactly as if it did not exist
    finally:
        cluster.head.run("alice", "container-retire", p, "--yes", timeout=60)


@pytest.fixture(autouse=True)
def _cluster_only(request):
    if "cluster" not in request.fixturenames:
        pytest.fail("every test here runs against the cluster fixture")


IMPOSTOR = r"""
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        if self.path == "/v1/list":
            body = {"result": []}
        else:
            body = {"error": {"code": "not_found", "message": "gone", "gone": True}}
        data = json.dumps(body).encode()
        self.send_response(200 if "result" in body else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = _answer
http.server.HTTPServer(("%s", %d), H).serve_forever()
"""


def test_the_head_never_believes_an_impostor_on_an_agents_port(cluster):
    """While a node's agent is down a user takes its port and answers "gone" / "no containers":
    the head shows the container 'unknown' and frees nothing."""
    p = unique_project("imp")
    node = None
    impostor = None
    try:
        ok(cluster.head.run("alice", "container-deploy", p, "--background", "--gpus", "1", timeout=60))
        row = next(r for r in json.loads(ok(cluster.head.run("alice", "container-list", "--json")).stdout)
                   if r["project"] == p)
        node = row["node"]
        cluster.kill_agent(node)
        impostor = slurmlab.run_in_node(node, ["runuser", "-u", USERS["bob"], "--", "python3", "-c",
                                               IMPOSTOR % (slurmlab.NODES[node], PORT)])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                http.client.HTTPConnection(slurmlab.NODES[node], PORT, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.1)
        rows = json.loads(ok(cluster.head.run("alice", "container-list", "--all", "--json")).stdout)
        mine = [r for r in rows if r["project"] == p]
        assert mine and mine[0]["status"] == "unknown", mine  # not "gone"
        inv = json.loads(ok(cluster.head.run("alice", "ds01", "gpus", "--json")).stdout)
        assert [d for d in inv["devices"] if d["holder"] and d["holder"]["project"] == p]  # still held
        assert {n["node"]: n["agent"] for n in inv["nodes"]}[node] == "not answering"
    finally:
        if impostor is not None:
            impostor.kill()
            subprocess.run(["pkill", "-9", "-u", USERS["bob"], "-f", "http.server"], check=False)
        if node is not None and node not in cluster.agents:
            time.sleep(0.5)
            cluster.start_agent(node)
        cluster.head.run("alice", "container-retire", p, "--yes", timeout=60)


def test_a_workspace_swapped_for_a_symlink_is_never_bound(cluster):
    """Between create and start the user replaces the workspace with a symlink to another
    user's: the node pins the workspace at each start (no symlinks followed), so the start is
    refused and nothing of the other user's is mounted."""
    import os
    import pwd

    p = unique_project("swap")
    home = pwd.getpwnam(USERS["alice"]).pw_dir
    ws = os.path.join(home, "workspace", p)
    target = pwd.getpwnam(USERS["bob"]).pw_dir
    try:
        ok(cluster.head.run("alice", "container-create", p, timeout=60))
        subprocess.run(["runuser", "-u", USERS["alice"], "--", "sh", "-c",
                        f"rm -rf '{ws}' && ln -s '{target}' '{ws}'"], check=True)
        r = cluster.head.run("alice", "container-start", p, timeout=60)
        assert r.returncode != 0 and "workspace" in r.stderr, r
        c = docker.from_env().containers.list(all=True, filters={"label": [f"ds01.project={p}"]})
        assert all(x.status != "running" for x in c)
    finally:
        cluster.head.run("alice", "container-retire", p, "--yes", timeout=60)
        subprocess.run(["rm", "-f", ws], check=False)
