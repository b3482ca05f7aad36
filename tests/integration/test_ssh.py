"""container-ssh (issue 13) with real clients and real servers: OpenSSH's ssh/sftp/scp as a real
user, ``ProxyCommand container-ssh``, the container's own sshd in inetd mode; the laptop path
through the host's real sshd (started here on 127.0.0.1, a spare port, a test key).

The project image is built FROM the bootstrapped base (``base_image``: Debian + venv + sshd).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pexpect
import pytest

from .harness import BIN, ok, unique_project, USERS, write_as

pytestmark = pytest.mark.docker


def home(user: str) -> str:
    return pwd.getpwnam(USERS[user]).pw_dir


def as_user(user: str, *argv: str) -> list[str]:
    return ["runuser", "-u", USERS[user], "--", *argv]


def listening() -> set[str]:
    """Local addresses of the host's listening TCP sockets (``ss -ltn``)."""
    return set(listeners())


def listeners() -> dict[str, list[int]]:
    """Listening TCP address -> the pids holding it (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3]: [int(p) for p in re.findall(r"pid=(\d+)", line)]
            for line in out.splitlines() if line.strip()}


def ours(pid: int, daemon, container_ips: list[str]) -> bool:
    """Whether a process is part of this test's way in: our daemon, a container-ssh, or the
    engine's port proxy for our container."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if comm == "docker-proxy":
        return any(ip.encode() in argv for ip in container_ips)
    return pid == daemon.proc.pid or comm == "container-ssh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Keys:
    """alice's "laptop": a key pair made by her in a private directory, its public half appended
    to her ~/.ssh/authorized_keys on the host (restored afterwards)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.dir = Path(f"/tmp/ds01-ssh-{secrets.token_hex(3)}")
        self.dir.mkdir(mode=0o700)
        shutil.chown(self.dir, USERS["alice"], USERS["alice"])
        self.key = self.dir / "id_ed25519"
        subprocess.run(as_user("alice", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)), check=True)
        self.auth = Path(home("alice")) / ".ssh" / "authorized_keys"
        self.saved = self.auth.read_bytes() if self.auth.exists() else None
        old = self.saved.decode() if self.saved else ""
        write_as("alice", self.auth, old + (self.dir / "id_ed25519.pub").read_text())
        subprocess.run(as_user("alice", "chmod", "700", str(self.auth.parent)), check=True)
        subprocess.run(as_user("alice", "chmod", "600", str(self.auth)), check=True)

    def env(self) -> list[str]:
        return ["env", "-i", f"PATH={BIN}:/usr/bin:/bin", f"DS01_ROOT={self.daemon.root}", "LANG=C.UTF-8",
                f"HOME={home('alice')}"]

    def opts(self, proxy: str | None = "container-ssh %n") -> list[str]:
        return ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.key),
                "-o", f"UserKnownHostsFile={self.dir}/known_hosts", "-o", "StrictHostKeyChecking=accept-new",
                "-o", "LogLevel=ERROR", "-o", f"User={USERS['alice']}",
                *(["-o", f"ProxyCommand={proxy}"] if proxy else [])]

    def argv(self, tool: str, *args: str, proxy: str | None = "container-ssh %n") -> list[str]:
        return as_user("alice", *self.env(), tool, *self.opts(proxy), *args)

    def ssh(self, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv("ssh", *args, **kw), capture_output=True, text=True, timeout=timeout)

    def restore(self) -> None:
        if self.saved is None:
            self.auth.unlink(missing_ok=True)
        else:
            self.auth.write_bytes(self.saved)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sshd_base(daemon, base_image, docker_client) -> str:
    """The base image with sshd in it: a base bootstrapped before issue 13 is rebuilt once."""
    probe = ["sh", "-c", "test -x /usr/sbin/sshd"]
    try:
        docker_client.containers.run(base_image, probe, remove=True)
    except Exception:
        p = daemon.run(None, "ds01", "admin", "base-image", "bootstrap", "--force", timeout=1200)
        assert p.returncode == 0, f"bootstrap failed\n{p.stdout[-3000:]}\n{p.stderr}"
    return base_image


@pytest.fixture(scope="module")
def before() -> set[str]:
    return listening()


@pytest.fixture(scope="module")
def keys(daemon):
    k = Keys(daemon)
    yield k
    k.restore()


@pytest.fixture(scope="module")
def project(daemon, sshd_base, before, keys):
    p = unique_project("ssh")
    ok(daemon.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank"))
    yield p
    daemon.run("alice", "container-retire", p)
    daemon.run("alice", "image-delete", p, "--force", "--yes")
    shutil.rmtree(Path(home("alice")) / "workspace" / p, ignore_errors=True)


def events(daemon, action: str) -> list[dict]:
    with open(daemon.root / "var/log/ds01/events.jsonl") as f:
        return [e for e in map(json.loads, f) if e.get("action") == action]


def container_of(daemon, docker_client, project: str):
    cs = [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == project]
    return cs[0] if cs else None


# --------------------------------------------------------------------------- straight on the host


def test_first_connection_starts_the_container_and_runs_in_its_venv(daemon, docker_client, project, keys):
    assert container_of(daemon, docker_client, project) is None
    r = keys.ssh(f"{project}.ds01", "python3 -c 'import sys; print(sys.prefix)'; id -un; pwd", timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/opt/venv", USERS["alice"], home("alice")], r.stdout
    c = container_of(daemon, docker_client, project)
    assert c is not None and c.status == "running"
    c.reload()
    assert not c.ports and not c.attrs["HostConfig"].get("PortBindings")  # nothing published
    # the second time the host key is known (known_hosts, strict) and the same container is used
    r = keys.ssh("-o", "StrictHostKeyChecking=yes", f"{project}.ds01", "echo again")
    assert r.returncode == 0 and r.stdout.strip() == "again", r.stderr
    assert len([c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == project]) == 1
    assert any(e["result"] == "ok" and e["target"] == project for e in events(daemon, "container.ssh"))


def test_binary_safe_both_ways(project, keys):
    blob = os.urandom(3 * 1024 * 1024)
    p = subprocess.run(keys.argv("ssh", f"{project}.ds01", "sha256sum; head -c 1048576 /dev/urandom | tee /tmp/b | "
                                 "sha256sum >&2; cat /tmp/b"), input=blob, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import hashlib

    assert hashlib.sha256(blob).hexdigest() in p.stdout.decode(errors="replace")
    assert hashlib.sha256(p.stdout[-1048576:]).hexdigest() in p.stderr.decode()


def test_a_pty_follows_the_window_and_keeps_the_venv(project, keys):
    argv = keys.argv("ssh", "-tt", f"{project}.ds01")
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=60, dimensions=(33, 101))
    try:
        child.sendline("stty size")
        child.expect(r"33 101")
        child.setwinsize(41, 120)
        time.sleep(0.3)
        child.sendline("stty size")
        child.expect(r"41 120")
        child.sendline('echo "P=$PATH V=$VIRTUAL_ENV"; tty')
        child.expect(r"P=/opt/venv/bin:\S* V=/opt/venv")
        child.expect(r"/dev/pts/\d+")
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


def test_sftp_and_scp_put_files_into_the_workspace(project, keys):
    ws = Path(home("alice")) / "workspace" / project
    src = keys.dir / "data.bin"
    src.write_bytes(os.urandom(200_000))
    shutil.chown(src, USERS["alice"], USERS["alice"])
    batch = keys.dir / "batch"
    batch.write_text(f"put {src} /workspace/via-sftp.bin\n")
    shutil.chown(batch, USERS["alice"], USERS["alice"])
    r = subprocess.run(keys.argv("sftp", "-b", str(batch), f"{project}.ds01"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(keys.argv("scp", str(src), f"{project}.ds01:/workspace/via-scp.bin"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("via-sftp.bin", "via-scp.bin"):
        f = ws / name
        assert f.read_bytes() == src.read_bytes()
        assert f.stat().st_uid == pwd.getpwnam(USERS["alice"]).pw_uid


def test_local_forward_reaches_a_server_inside_the_container_only(daemon, docker_client, project, keys):
    cport, lport = 9071, free_port()
    server = subprocess.Popen(keys.argv("ssh", "-L", f"127.0.0.1:{lport}:127.0.0.1:{cport}", f"{project}.ds01",
                                        f"cd /tmp && echo inside > hello.txt && echo $$ > srv.pid && "
                                        f"exec python3 -m http.server --bind 127.0.0.1 {cport}"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{lport}/hello.txt", timeout=2) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body == "inside\n", server.stderr.read1().decode() if server.poll() is not None else "no answer"
        # the server listens on the container's loopback only: the host cannot reach it directly
        c = container_of(daemon, docker_client, project)
        c.reload()
        ips = [n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
        for ip in ips:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((ip, cport)) != 0
    finally:
        server.terminate()
        server.wait(10)
        # as with any ssh server, a command without a terminal outlives a client that went away
        keys.ssh(f"{project}.ds01", "kill $(cat /tmp/srv.pid)")


def test_the_laptop_path_through_the_hosts_sshd(daemon, project, keys):
    """laptop ssh → ProxyCommand ssh -T user@server container-ssh P → the container."""
    d = keys.dir / "hostsshd"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        # as on a Debian host (UsePAM yes): the test users have locked passwords, key login works
        "UsePAM yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"AuthorizedKeysFile .ssh/authorized_keys\nAllowUsers {USERS['alice']}\n"
        # where the test daemon's socket is; a real host uses the default /run/ds01/ds01.sock
        f"SetEnv DS01_ROOT={daemon.root} PATH={BIN}:/usr/bin:/bin\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = open(d / "sshd.log", "wb")
    host = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    try:
        for _ in range(100):
            if f"127.0.0.1:{port}" in listening():
                break
            time.sleep(0.05)
        outer = (f"ssh -F /dev/null -T -p {port} -i {keys.key} -o BatchMode=yes -o IdentitiesOnly=yes "
                 f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
                 f"{USERS['alice']}@127.0.0.1 container-ssh {project}")
        r = keys.ssh(f"{project}.ds01", "python3 -c 'import sys; print(sys.prefix)'; cat /etc/hostname",
                     proxy=outer)
        assert r.returncode == 0, r.stderr + (d / "sshd.log").read_text(errors="replace")
        lines = r.stdout.split()
        assert lines[0] == "/opt/venv" and lines[1] != socket.gethostname()
    finally:
        host.terminate()
        host.wait(10)
        log.close()


def test_no_listening_socket_was_added_on_the_host(daemon, docker_client, project, before):
    # the host may be shared with other test runs: a new socket counts when one of ours holds it
    c = container_of(daemon, docker_client, project)
    c.reload()
    ips = [n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
    new = {addr: pids for addr, pids in listeners().items() if addr not in before}
    assert not {addr for addr, pids in new.items() if any(ours(p, daemon, ips) for p in pids)}, new


# --------------------------------------------------------------------------- refusals


def test_another_users_project_is_refused(daemon, docker_client, project):
    r = daemon.run("bob", "container-ssh", project, input="")
    assert r.returncode != 0 and r.stdout == ""
    assert project in r.stderr
    assert not [c for c in daemon.containers(docker_client)
                if c.labels.get("ds01.project") == project and c.labels.get("ds01.user") == USERS["bob"]]
    assert any(e["user"] == USERS["bob"] and e["result"] == "denied" for e in events(daemon, "container.ssh"))


def test_no_authorized_keys_is_refused_with_the_fix(daemon, project, keys):
    keys.auth.rename(keys.auth.with_suffix(".away"))
    try:
        r = daemon.run("alice", "container-ssh", project, input="")
    finally:
        keys.auth.with_suffix(".away").rename(keys.auth)
    assert r.returncode != 0 and "authorized_keys" in r.stderr and "vscode-setup" in r.stderr
    ev = events(daemon, "container.ssh")[-1]
    assert ev["result"] == "denied" and "authorized_keys" in ev["data"]["message"]


def test_an_image_without_sshd_is_refused_with_the_fix(daemon, docker_client, keys):
    p = unique_project("nosshd")
    try:
        ok(daemon.run("alice", "container-create", p))  # the busybox test image, no Dockerfile
        # not running and no Dockerfile: started as it is, then refused for its image
        r = daemon.run("alice", "container-ssh", p, input="")
        assert r.returncode != 0 and "no OpenSSH server" in r.stderr and "--add-apt openssh-server" in r.stderr
        assert r.stdout == ""
        assert container_of(daemon, docker_client, p).status == "running"
        assert events(daemon, "container.ssh")[-1]["result"] == "denied"
        r = daemon.run("alice", "container-ssh", f"{p}.ds01", "--no-start", input="")
        assert r.returncode != 0 and "no OpenSSH server" in r.stderr
    finally:
        daemon.run("alice", "container-remove", p, "--force")
        shutil.rmtree(Path(home("alice")) / "workspace" / p, ignore_errors=True)


# --------------------------------------------------------------------------- lifecycle


def test_an_ssh_session_is_a_shell_not_work_and_ends_when_the_container_stops(daemon, project, keys):
    argv = keys.argv("ssh", "-tt", f"{project}.ds01")
    child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=60, dimensions=(24, 80))
    try:
        # the remote shell's answer, not the local terminal's echo of the line typed before ssh
        # has the connection up (the container's sshd wrapper may still be setting up then)
        child.sendline("echo READY$((6*7))")
        child.expect("READY42")
        # sshd and the login shell are not work: a stop without --yes is not refused
        t0 = time.monotonic()
        r = ok(daemon.run("alice", "container-stop", project))
        assert "still running" not in r.stderr
        child.expect(pexpect.EOF, timeout=30)
        assert time.monotonic() - t0 < 30
    finally:
        child.close(force=True)
    r = daemon.run("alice", "container-ssh", project, "--no-start", input="")
    assert r.returncode != 0 and "not running" in r.stderr
    assert events(daemon, "container.ssh")[-1]["result"] == "denied"
    # without --no-start the next connection starts it again
    r = keys.ssh(f"{project}.ds01", "echo back")
    assert r.returncode == 0 and r.stdout.strip() == "back", r.stderr


# --------------------------------------------------------------------------- the laptop side


def test_vscode_setup_prints_the_block_and_checks_the_keys(daemon, project, keys):
    dot_ssh = sorted(p.name for p in (Path(home("alice")) / ".ssh").iterdir())
    r = ok(daemon.run("alice", "vscode-setup", project))
    user = USERS["alice"]
    assert f"Host {project}.ds01" in r.stdout
    assert re.search(rf"ProxyCommand ssh -T {user}@\S+ container-ssh {project}\n", r.stdout)
    assert f"User {user}" in r.stdout
    assert f"code --remote ssh-remote+{project}.ds01 /workspace" in r.stdout
    # the known_hosts line is the host key the container's sshd presented
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith(f"{project}.ds01 ssh-ed25519"))
    known = (keys.dir / "known_hosts").read_text()
    assert line.split()[2] in known
    assert sorted(p.name for p in (Path(home("alice")) / ".ssh").iterdir()) == dot_ssh  # no key made here
    r = daemon.run("carol", "vscode-setup")
    assert "Host *.ds01" in r.stdout and "container-ssh %n" in r.stdout
    if not (Path(home("carol")) / ".ssh" / "authorized_keys").exists():
        assert r.returncode == 1 and "authorized_keys" in r.stderr


# --------------------------------------------------------------------------- JupyterLab


def test_jupyter_listens_inside_only_and_answers_through_the_forward(daemon, docker_client, project, keys):
    """``project-launch --jupyter`` publishes nothing on the host; ``ssh -L … P.ds01`` reaches it.
    Needs PyPI (or the admin's pip index) for jupyterlab, like test_workflows' jupyter test."""
    ws = Path(home("alice")) / "workspace" / project
    write_as("alice", ws / "requirements.txt", "jupyterlab\n")
    r = ok(daemon.run("alice", "project-launch", project, "--background", "--jupyter", "--yes", timeout=900))
    assert f"ssh -N -L 8888:127.0.0.1:8888 {project}.ds01" in r.stdout, r.stdout
    token = re.search(r"open:\s+http://127\.0\.0\.1:8888/lab\?token=(\S+)", r.stdout).group(1)
    c = container_of(daemon, docker_client, project)
    c.reload()
    assert not c.ports and not c.attrs["HostConfig"].get("PortBindings")
    lport = free_port()
    fwd = subprocess.Popen(keys.argv("ssh", "-N", "-L", f"127.0.0.1:{lport}:127.0.0.1:8888", f"{project}.ds01"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{lport}/api/status?token={token}", timeout=5) as resp:
                    status = resp.status
                break
            except urllib.error.HTTPError as e:
                status = e.code
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{lport}/api/contents", timeout=10)
        assert e.value.code == 403
    finally:
        fwd.terminate()
        fwd.wait(10)
