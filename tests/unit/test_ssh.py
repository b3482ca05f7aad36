"""container-ssh without Docker: the sshd config the daemon supplies, the session set-up (what is
handed in, what is refused, what is cached), the per-user host key, the laptop's config block,
the fast path's grammar and the idle signal ignoring SSH/VS Code server processes."""

from __future__ import annotations

import shutil
import socket
from types import SimpleNamespace

import pytest

from ds01.cli import fast
from ds01.cli.sshing import config_block, project_of, vscode_text
from ds01.errors import Conflict, NotFound
from ds01.models.config import LifecycleConfig
from ds01.runtime.base import ExecHandle
from ds01.services import ssh as ssh_mod
from ds01.services.identity import Caller
from ds01.services.sampling import CgroupReader
from ds01.services.ssh import SshService, sshd_config

ALICE = Caller(uid=1001, gid=1001, name="alice", home="/home/alice", group="alice", groups=frozenset(),
               is_admin=False)


def test_sshd_config_is_keys_only_for_the_caller_with_local_forwarding_and_sftp():
    cfg = sshd_config("alice", {"PATH": "/opt/venv/bin:/usr/bin", "VIRTUAL_ENV": "/opt/venv", "HOME": "/x",
                                "CUDA_VISIBLE_DEVICES": "0,1", "BAD": 'a"b', "ALSO_BAD": "a\nb", "SPACE": "a b"})
    lines = cfg.splitlines()
    for want in ("AllowUsers alice", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "AuthenticationMethods publickey", "PermitRootLogin no", "AllowTcpForwarding local",
                 "GatewayPorts no", "PermitTunnel no", "Subsystem sftp internal-sftp", "PermitUserEnvironment no"):
        assert want in lines
    setenv = [ln for ln in lines if ln.startswith("SetEnv")]
    assert len(setenv) == 1  # sshd honours only the first SetEnv line
    assert '"PATH=/opt/venv/bin:/usr/bin"' in setenv[0] and '"CUDA_VISIBLE_DEVICES=0,1"' in setenv[0]
    assert '"SPACE=a b"' in setenv[0]
    assert "HOME=" not in setenv[0] and "BAD" not in setenv[0]
    assert not any(ln.startswith(("ListenAddress", "Port")) for ln in lines)


class FakeRuntime:
    def __init__(self, sshd: bytes = b"/usr/sbin/sshd\n", code: int = 0):
        self.calls: list[dict] = []
        self.sshd, self.code = sshd, code
        self.inspects = 0

    def exec_start(self, cid, cmd, *, user, env, workdir, tty):
        a, b = socket.socketpair()
        self.calls.append({"cid": cid, "cmd": cmd, "user": user, "env": env, "workdir": workdir, "tty": tty, "peer": b})
        return ExecHandle(id=f"e{len(self.calls)}", sock=a, tty=tty)

    def exec_frames(self, handle):
        return iter([(1, self.sshd)] if handle.id == "e1" else [])

    def exec_exit_code(self, exec_id):
        return self.code

    def inspect(self, cid):
        self.inspects += 1
        return SimpleNamespace(env={"PATH": "/opt/venv/bin:/usr/bin:/bin", "VIRTUAL_ENV": "/opt/venv"})


def service(tmp_path, runtime, exec_target):
    ctx = SimpleNamespace(store=SimpleNamespace(path=tmp_path / "state.db"), runtime=runtime, events=[])
    ctx.emit = lambda *a, **k: ctx.events.append((a, k))
    return SshService(ctx, SimpleNamespace(exec_target=exec_target)), ctx


REC = SimpleNamespace(docker_id="c1", docker_name="ds01-1001-p", project="p", image="ds01/alice/p:latest", gpus=[])


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setattr(ssh_mod, "read_authorized_keys", lambda who: "ssh-ed25519 AAAA laptop")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")
def test_open_hands_in_key_keys_and_config_and_caches_the_probe(tmp_path, keys):
    rt = FakeRuntime()
    svc, ctx = service(tmp_path, rt, lambda who, ref, start, actor: REC)
    svc.open(ALICE, ALICE, "p", start=True)
    probe, sess = rt.calls
    assert probe["user"] == sess["user"] == "1001:1001" and not sess["tty"]
    assert sess["cmd"][:2] == ["/bin/sh", "-c"] and sess["cmd"][-1] == "/usr/sbin/sshd"
    env = sess["env"]
    assert env["DS01_SSH_KEYS"] == "ssh-ed25519 AAAA laptop"
    assert env["DS01_SSH_HOST_KEY"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "AllowUsers alice" in env["DS01_SSH_CONFIG"] and env["HOME"] == "/home/alice"
    # the secrets travel in the environment, never on the command line
    assert "PRIVATE KEY" not in " ".join(sess["cmd"]) and "AAAA" not in " ".join(sess["cmd"])
    key = tmp_path / "ssh" / "1001" / "ssh_host_ed25519_key"
    assert key.stat().st_mode & 0o077 == 0 and (tmp_path / "ssh").stat().st_mode & 0o077 == 0
    # again: no second probe or inspect, the same host key
    svc.open(ALICE, ALICE, "p", start=True)
    assert len(rt.calls) == 3 and rt.inspects == 1
    assert rt.calls[2]["env"]["DS01_SSH_HOST_KEY"] == env["DS01_SSH_HOST_KEY"]
    assert svc.public_host_key(ALICE).startswith("ssh-ed25519 ")
    assert [a[0] for a, _ in ctx.events] == ["container.ssh", "container.ssh"]


def test_not_running_asks_the_client_to_start_it_unless_no_start(tmp_path, keys):
    def missing(who, ref, start, actor):
        raise NotFound("project 'p' has no container")

    svc, _ = service(tmp_path, FakeRuntime(), missing)
    with pytest.raises(Conflict) as e:
        svc.open(ALICE, ALICE, "p", start=True)
    assert e.value.details == {"start": True, "exists": False}
    with pytest.raises(NotFound) as e2:
        svc.open(ALICE, ALICE, "p", start=False)
    assert not e2.value.details


def test_an_image_without_sshd_is_refused_with_the_fix(tmp_path, keys):
    svc, _ = service(tmp_path, FakeRuntime(sshd=b"", code=127), lambda *a: REC)
    with pytest.raises(NotFound) as e:
        svc.open(ALICE, ALICE, "p", start=False)
    assert "no OpenSSH server" in e.value.message and "image-update p --add-apt openssh-server" in e.value.hint


def test_project_names_and_the_laptop_block():
    assert project_of("thesis.ds01") == "thesis" and project_of("thesis") == "thesis" and project_of(".ds01") == ".ds01"
    assert config_block("alice", "gpu1.lab", "thesis") == (
        "Host thesis.ds01\n    ProxyCommand ssh -T alice@gpu1.lab container-ssh thesis\n    User alice\n")
    assert "Host *.ds01" in config_block("alice", "gpu1.lab", None) and "container-ssh %n" in config_block(
        "alice", "gpu1.lab", None)
    text = vscode_text("alice", "gpu1.lab", "thesis", "ssh-ed25519 AAAAC3 ds01")
    assert "code --remote ssh-remote+thesis.ds01 /workspace" in text
    assert "thesis.ds01 ssh-ed25519 AAAAC3 ds01" in text and "ssh-keygen -t ed25519" in text


def test_the_fast_path_takes_the_plain_forms_only():
    assert fast.parse("container-ssh", ["thesis.ds01"]) == ("thesis.ds01", frozenset())
    assert fast.parse("container-ssh", ["thesis", "--no-start"]) == ("thesis", frozenset({"--no-start"}))
    assert fast.parse("container-ssh", ["thesis", "--gpus", "1"]) is None
    assert fast.parse("container-ssh", ["--help"]) is None


def test_ssh_and_vscode_server_processes_do_not_make_a_container_busy(tmp_path):
    ignore = frozenset(LifecycleConfig().ignore_processes)
    procs = {1: ("sshd", b"sshd: alice@notty\0"), 2: ("node", b"/home/alice/.vscode-server/bin/abc/node\0x\0"),
             3: ("python3", b"python3\0train.py\0"), 4: ("bash", b"-bash\0"), 5: ("node", b"node\0app.js\0")}
    for pid, (comm, cmdline) in procs.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        (tmp_path / str(pid) / "cmdline").write_bytes(cmdline)
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text("")
    reader = CgroupReader(proc=str(tmp_path))
    assert reader.busy_processes(list(procs), ignore) == 2  # train.py and a user's own node app


def test_user_setup_points_to_the_container_way_in():
    from ds01.cli.setup_checks import check_vscode, ssh_guidance

    g = ssh_guidance("alice", "gpu1.lab")
    assert "Host *.ds01" in g and "ProxyCommand ssh -T alice@gpu1.lab container-ssh %n" in g
    assert "vscode-setup" in check_vscode(True).detail and check_vscode(False).ok is None


def test_stop_and_retire_do_not_list_ssh_or_the_vscode_server_as_work():
    from ds01.services.processes import is_work

    ignore = frozenset(LifecycleConfig().ignore_processes)
    p = {"pid": 7, "name": "node", "command": "/home/alice/.vscode-server/cli/servers/Stable-1/server/node x.js"}
    assert not is_work(p, ignore)
    assert not is_work({"pid": 8, "name": "sshd", "command": "sshd: alice@pts/0"}, ignore)
    assert is_work({"pid": 9, "name": "node", "command": "node train.js"}, ignore)


def test_a_pid_in_the_root_cgroup_is_never_taken_for_a_containers(tmp_path):
    """A container's init pid reused by a host process (in the root cgroup) must not make the
    host's processes look like the container's work (or its CPU time)."""
    cg = tmp_path / "sys"
    (cg / "docker" / "abc").mkdir(parents=True)
    for d in (cg, cg / "docker" / "abc"):
        (d / "cpu.stat").write_text("usage_usec 1\n")
        (d / "cgroup.procs").write_text("")
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(f"30 1 0:26 / {cg} rw - cgroup2 cgroup2 rw\n")
    for pid, rel in ((10, "/"), (11, "/docker/abc")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(f"0::{rel}\n")
    reader = CgroupReader(proc=str(tmp_path), sys_cgroup=str(cg))
    assert reader.from_pid(10) is None
    got = reader.from_pid(11)
    assert got is not None and got.cpu == str(cg / "docker" / "abc")
