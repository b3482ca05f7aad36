"""No network path between different users' containers (issue 15, item 1): each user's containers
sit on a bridge network of their own, made and removed by the daemon of their instance."""

from __future__ import annotations

import json

import pytest

from tests.integration.harness import new_daemon, ok, unique_project

PORT = 8080
SECRET = "alices-token-less-notebook"


def _deploy(daemon, user: str, projects, stem: str) -> dict:
    p = unique_project(stem)
    projects.append((user, p))
    return json.loads(ok(daemon.run(user, "container-deploy", p, "--background", "--json")).stdout)


def _networks(docker_client, name: str) -> dict:
    return docker_client.containers.get(name).attrs["NetworkSettings"]["Networks"]


def _fetch(daemon, user: str, project: str, host: str) -> tuple[int, str]:
    # busybox nc (its static wget crashes resolving names); -w: give up after 3 s
    r = daemon.run(user, "container-run", project, "--", "sh", "-c",
                   f"echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {PORT}")
    return r.returncode, r.stdout


@pytest.fixture(scope="module")
def server(daemon, docker_client):
    """alice's container serving SECRET over plain HTTP, no token (busybox httpd, as alice)."""
    used: list = []
    out = _deploy(daemon, "alice", used, "srv")
    ok(daemon.run("alice", "container-run", out["project"], "--", "sh", "-c",
                  f"mkdir -p /tmp/www && echo {SECRET} > /tmp/www/index.html && "
                  f"busybox httpd -p {PORT} -h /tmp/www"))
    (net, ep), = _networks(docker_client, out["name"]).items()
    yield {**out, "ip": ep["IPAddress"], "network": net}
    for user, p in used:
        daemon.run(user, "container-retire", p)


def test_another_users_container_cannot_reach_the_server_by_ip_or_name(daemon, server, projects):
    bob = _deploy(daemon, "bob", projects, "peek")
    for host in (server["ip"], server["name"], server["project"]):
        code, out = _fetch(daemon, "bob", bob["project"], host)
        assert code != 0 and SECRET not in out, host


def test_the_same_users_containers_reach_each_other_by_ip_and_name(daemon, server, projects):
    mine = _deploy(daemon, "alice", projects, "peer")
    for host in (server["ip"], server["name"], server["project"]):
        code, out = _fetch(daemon, "alice", mine["project"], host)
        assert code == 0 and SECRET in out, host


def test_managed_containers_are_on_their_users_own_network_not_the_default_bridge(daemon, docker_client,
                                                                                    server, projects):
    bob = _deploy(daemon, "bob", projects, "net")
    alice_nets, bob_nets = _networks(docker_client, server["name"]), _networks(docker_client, bob["name"])
    assert "bridge" not in alice_nets and "bridge" not in bob_nets
    assert set(alice_nets).isdisjoint(bob_nets)
    for name, owner in ((server["network"], server["uid"]), (list(bob_nets)[0], bob["uid"])):
        net = docker_client.networks.get(name)
        assert net.attrs["Driver"] == "bridge" and not net.attrs["Internal"]  # outbound unchanged
        assert net.attrs["Labels"] == {"ds01.managed": "true", "ds01.instance": daemon.instance,
                                       "ds01.uid": str(owner)}


def test_a_users_network_goes_with_their_last_container(daemon, docker_client, projects):
    out = _deploy(daemon, "carol", projects, "last")
    (net,) = _networks(docker_client, out["name"])
    second = _deploy(daemon, "carol", projects, "last2")
    ok(daemon.run("carol", "container-retire", out["project"]))
    assert docker_client.networks.list(names=[net])  # the other container is still on it
    ok(daemon.run("carol", "container-retire", second["project"]))
    assert not [n for n in docker_client.networks.list(names=[net]) if n.name == net]


def test_a_daemon_prunes_only_its_own_instances_unused_networks(docker_client):
    mine, other = new_daemon(), new_daemon()  # two instances; only the first one runs
    labels = {"ds01.managed": "true", "ds01.uid": "4242"}
    nets = [docker_client.networks.create(f"ds01-{d.instance}-u4242", labels={**labels, "ds01.instance": d.instance})
            for d in (mine, other)]
    try:
        mine.start()  # reconcile at start: its own unused network goes, the other instance's stays
        names = {n.name for n in docker_client.networks.list(names=["-u4242"])}
        assert nets[0].name not in names and nets[1].name in names
    finally:
        mine.destroy(docker_client)
        for n in nets:
            try:
                n.remove()
            except Exception:
                pass
