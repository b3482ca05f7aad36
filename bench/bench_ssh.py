"""SSH into a container vs plain SSH to the host, measured in one interleaved run. Not run by CI.

* ``ssh P.ds01 true`` (``ProxyCommand container-ssh %n``, the container already running) vs
  ``ssh user@127.0.0.1 true`` to the host's own sshd (started here on a spare port, test key):
  bar ≤ 2× (median of the per-round ratios).
* for information: the full laptop path (``ProxyCommand ssh -T user@host container-ssh P``): two
  SSH handshakes, so about 2× plus ours.

Needs the bootstrapped base with sshd (``ds01 admin base-image bootstrap``) and openssh-server.

    sudo /opt/ds01/venv/bin/python bench/bench_ssh.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import USERS, ensure_users, new_daemon, unique_project  # noqa: E402
from tests.integration.test_ssh import Keys, free_port, listening  # noqa: E402


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    import docker

    client = docker.from_env()
    ensure_users()
    d = new_daemon()
    d.start()
    keys = Keys(d)
    p = unique_project("bench")
    user = USERS["alice"]
    host = None
    rows = []
    try:
        r = d.run("alice", "project-init", p, "--yes", "--no-git", "--type", "blank")
        assert r.returncode == 0, r.stderr
        first = keys.ssh(f"{p}.ds01", "true", timeout=900)  # builds the image, starts the container
        assert first.returncode == 0, first.stderr
        hd = keys.dir / "hostsshd"
        hd.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hd / "host_key")], check=True)
        port = free_port()
        (hd / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hd}/host_key\nPidFile {hd}/sshd.pid\nUsePAM yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n"
            f"SetEnv DS01_ROOT={d.root} PATH={keys.env()[2].split('=', 1)[1]}\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        host = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(hd / "sshd_config")],
                                stderr=subprocess.DEVNULL)
        while f"127.0.0.1:{port}" not in listening():
            time.sleep(0.05)
        hop = (f"ssh -F /dev/null -T -p {port} -i {keys.key} -o BatchMode=yes -o IdentitiesOnly=yes "
               f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {user}@127.0.0.1")
        into = keys.argv("ssh", f"{p}.ds01", "true")
        laptop = keys.argv("ssh", f"{p}.ds01", "true", proxy=f"{hop} container-ssh {p}")
        plain = keys.argv("ssh", "-p", str(port), "-o", "StrictHostKeyChecking=no", "127.0.0.1", "true", proxy=None)
        for argv in (into, laptop, plain):  # warm caches, learn host keys
            timed(argv)
        a, b, c = [], [], []
        for _ in range(args.rounds):
            a.append(timed(into))
            b.append(timed(plain))
            c.append(timed(laptop))
        rows.append(("ssh P.ds01 true vs ssh host true", statistics.median(a), statistics.median(b),
                     statistics.median(x / y for x, y in zip(a, b)), 2.0))
        rows.append(("laptop path (via host sshd) vs ssh host true", statistics.median(c), statistics.median(b),
                     statistics.median(x / y for x, y in zip(c, b)), None))
    finally:
        if host is not None:
            host.terminate()
            host.wait(10)
        d.run("alice", "container-retire", p, "--yes")
        d.run("alice", "image-delete", p, "--force", "--yes")
        keys.restore()
        d.stop()
        for ctr in d.containers(client):
            ctr.remove(force=True)
        shutil.rmtree(Path(os.path.expanduser(f"~{user}")) / "workspace" / p, ignore_errors=True)
        shutil.rmtree(d.root, ignore_errors=True)
    print(f"{'benchmark':48} {'ds01 (s)':>9} {'raw (s)':>8} {'ratio':>6} {'bar':>5}  verdict")
    for name, x, y, r, bar in rows:
        verdict = "info" if bar is None else ("PASS" if r <= bar else "FAIL")
        print(f"{name:48} {x:9.3f} {y:8.3f} {r:6.2f} {bar or 0:5.1f}  {verdict}")


if __name__ == "__main__":
    main()
