"""Every refusal is audited: refused run/attach/exec over the WebSocket leave a denied event that
admins see (a refused exec is a NotFound: another user's container looks missing)."""

from __future__ import annotations

import json

from tests.integration.harness import USERS, ok, unique_project


def test_bobs_refused_exec_into_alices_container_is_a_denied_event_admins_see(daemon, docker_client, projects):
    p = unique_project("audit")
    projects.append(("alice", p))
    name = json.loads(ok(daemon.run("alice", "container-create", p, "--json")).stdout)["name"]
    ok(daemon.run("alice", "container-start", p))
    cid = docker_client.containers.get(name).id
    for verb, extra in (("container-run", ["--", "cat", "/workspace/secret"]), ("container-attach", [])):
        r = daemon.run("bob", verb, cid[:12], *extra)
        assert r.returncode == 4, (verb, r.stdout, r.stderr)
    evs = json.loads(ok(daemon.run("adm", "ds01", "events", "--user", USERS["bob"], "--type", "container.exec",
                                   "--json")).stdout)
    denied = [e for e in evs if e["result"] == "denied" and cid[:12] in (e.get("target") or "")]
    assert len(denied) >= 2, evs
    assert all(e["reason"] == "not_found" and e["uid"] is not None for e in denied)
    ok(daemon.run("alice", "container-remove", p, "--force"))
