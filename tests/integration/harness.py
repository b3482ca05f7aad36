"""A real ds01d under a temporary root, real users, real Docker: the integration test harness."""

from __future__ import annotations

import grp
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import yaml

BIN = Path(os.environ.get("DS01_BIN") or Path(__import__("sys").executable).parent)
TEST_IMAGE = "ds01-test/busybox:latest"
USERS = {"alice": "ds01-alice", "bob": "ds01-bob", "carol": "ds01-carol", "adm": "ds01-adm"}
ADMIN_GROUP = "ds01-admin"


def ensure_users() -> None:
    """The CI script creates these; create them here too so a developer can run the tests alone."""
    try:
        grp.getgrnam(ADMIN_GROUP)
    except KeyError:
        subprocess.run(["groupadd", ADMIN_GROUP], check=True)
    for key, name in USERS.items():
        try:
            pwd.getpwnam(name)
        except KeyError:
            cmd = ["useradd", "-m", "-s", "/bin/bash", name]
            if key == "adm":
                cmd[1:1] = ["-G", ADMIN_GROUP]
            subprocess.run(cmd, check=True)


def ensure_busybox_image(client: docker.DockerClient) -> None:
    """A tiny local image from Debian's busybox-static (no registry needed)."""
    try:
        client.images.get(TEST_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox") or "/bin/busybox"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "home", "usr", "usr/bin"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.add(busybox, arcname="bin/busybox") if False else tar.addfile(ti)
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "ls", "cat", "id", "whoami", "sleep", "echo", "env", "touch", "mkdir", "ps", "top",
                       "yes", "dd", "stat", "head", "grep", "kill", "true", "false", "seq", "wc", "timeout"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ti)
    client.api.import_image_from_data(buf.getvalue(), repository="ds01-test/busybox", tag="latest")


def sweep_stale_networks(client: docker.DockerClient, max_age: float = 3600) -> None:
    """Unused user networks of test daemons that died without cleaning up (a killed run): their
    root directory is gone, or they are an hour old. The engine has only ~30 subnets by default."""
    import glob
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    for n in client.networks.list(filters={"label": "ds01.managed=true"}):
        a = n.attrs
        instance = (a.get("Labels") or {}).get("ds01.instance", "")
        if not (a.get("Name", "").startswith("ds01-t") and instance.startswith("t")) or a.get("Containers"):
            continue
        try:
            created = datetime.fromisoformat(a["Created"][:26].rstrip("Z") + "+00:00")
            dead = not glob.glob(os.path.join(tempfile.gettempdir(), f"ds01-test-{instance[1:]}-*"))
            if (dead or (now - created).total_seconds() > max_age) and not client.containers.list(
                    all=True, filters={"network": a["Name"]}):
                n.remove()
        except (KeyError, ValueError, docker.errors.APIError):
            pass


@dataclass
class Daemon:
    root: Path
    instance: str
    prefix: str
    config: dict
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "ds01d.log"

    @property
    def socket(self) -> Path:
        return self.root / "run/ds01/ds01.sock"

    def write_config(self, extra: dict | None = None) -> None:
        cfg_dir = self.root / "etc/ds01"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        data = _merge(self.config, extra or {})
        (cfg_dir / "config.yaml").write_text(yaml.safe_dump(data))

    def start(self, extra: dict | None = None, wait: bool = True) -> None:
        self.write_config(extra)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN / "ds01d"), "--root", str(self.root)], stdout=log, stderr=log)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ds01d exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(str(self.socket))
                    s.close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"ds01d did not come up:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, extra: dict | None = None) -> None:
        self.stop()
        self.start(extra)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def env(self) -> dict[str, str]:
        return {"DS01_ROOT": str(self.root)}

    def run(self, user: str | None, cmd: str, *args: str, input: str | None = None,
            timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a DS01 CLI command as a real Unix user (``user`` None = root)."""
        full_env = {"PATH": f"{BIN}:/usr/bin:/bin", "LANG": "C.UTF-8", **self.env(), **(env or {})}
        envargs = [f"{k}={v}" for k, v in full_env.items()]
        argv = [str(BIN / cmd), *args]
        if user is not None:
            argv = ["runuser", "-u", USERS.get(user, user), "--", "env", "-i", *envargs, *argv]
            run_env = None
        else:
            run_env = {**os.environ, **full_env}
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=run_env,
                              cwd="/")

    def api(self, user: str | None, method: str, path: str, body: bytes | str | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
        """A raw HTTP request on the socket, sent by a process running as ``user``."""
        script = (
            "import http.client,socket,sys,json\n"
            "class C(http.client.HTTPConnection):\n"
            "    def connect(self):\n"
            "        self.sock=socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])\n"
            "c=C('localhost'); body=sys.stdin.buffer.read() or None\n"
            "c.request(sys.argv[2], sys.argv[3], body=body, headers=json.loads(sys.argv[4]))\n"
            "r=c.getresponse(); print(json.dumps({'status': r.status, 'body': r.read().decode()}))\n"
        )
        argv = [str(BIN / "python"), "-c", script, str(self.socket), method, path, json.dumps(headers or {})]
        if user is not None:
            argv = ["runuser", "-u", USERS.get(user, user), "--", *argv]
        data = body.encode() if isinstance(body, str) else body
        p = subprocess.run(argv, input=data or b"", capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr.decode()
        out = json.loads(p.stdout)
        try:
            parsed = json.loads(out["body"]) if out["body"] else {}
        except ValueError:
            parsed = {"raw": out["body"]}
        return out["status"], parsed

    def destroy(self, client: docker.DockerClient) -> None:
        """Stop the daemon, remove every container of its instance, their workspace pins (bind
        mounts the daemon made) and its root directory."""
        from ds01.services.workspace import unpin_workspace

        self.stop()
        for c in self.containers(client):
            c.remove(force=True)
        for n in client.networks.list(filters={"label": f"ds01.instance={self.instance}"}):
            try:  # its users' networks (issue 15)
                n.remove()
            except docker.errors.APIError:
                pass
        mounts = self.root / "var/lib/ds01/mounts"
        if mounts.is_dir():
            for name in os.listdir(mounts):
                unpin_workspace(str(mounts / name))
        shutil.rmtree(self.root, ignore_errors=True)

    def containers(self, client: docker.DockerClient) -> list:
        return client.containers.list(all=True, filters={"label": f"ds01.instance={self.instance}"})


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def new_daemon() -> Daemon:
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"ds01-test-{tag}-"))
    os.chmod(root, 0o755)  # the socket's directory must be reachable by the test users
    instance = f"t{tag}"
    prefix = f"ds01t{tag}"
    config = {
        "admin_group": ADMIN_GROUP,
        "daemon": {"instance": instance, "log_level": "info"},
        "containers": {"name_prefix": prefix, "stop_timeout": 2},
        "images": {"default": TEST_IMAGE},
        "gpu": {"inventory": "simulated"},
        # many test daemons run at once: no fixed TCP ports (tests that need them set free ones)
        "observability": {"metrics": {"listen": ""}, "web": {"listen": ""}},
    }
    return Daemon(root=root, instance=instance, prefix=prefix, config=config)


def unique_project(stem: str = "p") -> str:
    return f"t-{stem}-{secrets.token_hex(3)}"


def write_as(user: str, path, text: str) -> None:
    """Create a file as the user (so it is theirs, as it would be in real life)."""
    subprocess.run(["runuser", "-u", USERS.get(user, user), "--", "sh", "-c",
                    'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", str(path)], input=text, text=True, check=True)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert a CLI run succeeded, showing its output when it did not."""
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
