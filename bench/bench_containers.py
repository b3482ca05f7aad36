"""Container lifecycle and listing through DS01 vs the raw docker CLI, measured in one interleaved
run on this host. Prints median ratios (DS01 / docker). Needs root, a Docker Engine and the test
users (scripts/test.sh creates them). Not run by CI.

    sudo /opt/ds01/venv/bin/python bench/bench_containers.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import BIN, TEST_IMAGE, USERS, ensure_busybox_image, ensure_users, new_daemon  # noqa: E402


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--list-size", type=int, default=50)
    ap.add_argument("--bridge-baseline", action="store_true",
                    help="raw containers on the default bridge (DS01's are on per-user networks)")
    args = ap.parse_args()
    import docker

    client = docker.from_env()
    # An installed package has its bytecode; a source tree edited since its last run as root (or
    # run with PYTHONDONTWRITEBYTECODE) does not, and the test users cannot write __pycache__:
    # without this every CLI call would also recompile the edited modules.
    import compileall

    import ds01

    compileall.compile_dir(os.path.dirname(ds01.__file__), quiet=1)
    ensure_users()
    ensure_busybox_image(client)
    d = new_daemon()
    d.config["defaults"] = {"max_containers": 1000}
    d.start()
    user = USERS["alice"]
    pw = pwd.getpwnam(user)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "DS01_ROOT": str(d.root), "LANG": "C.UTF-8"}
    as_user = ["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()]]
    as_root = ["runuser", "-u", "root", "--"]  # same wrapper cost on both sides
    ws = Path(pw.pw_dir) / "workspace"
    rows = []
    try:
        # -- create + start -----------------------------------------------------------------
        # Like for like: DS01 puts each user's containers on their own bridge network (issue 15),
        # and the engine's start on a user-defined network costs ~45-60 ms more than on the default
        # bridge (embedded DNS set-up: a resolver re-exec + iptables rules). So the raw side uses a
        # user-defined network too; --bridge-baseline measures against the default bridge instead.
        net_args: list[str] = []
        if not args.bridge_baseline:
            raw_net = f"bench-raw-net-{os.getpid()}"
            subprocess.run(["docker", "network", "create", "--label", "ds01.bench=1", raw_net], check=True,
                           stdout=subprocess.DEVNULL)
            net_args = ["--network", raw_net]
        ds, dk = [], []
        for i in range(args.rounds):
            p = f"bench-{i}"
            ds.append(timed([*as_user, str(BIN / "container-create"), p]) +
                      timed([*as_user, str(BIN / "container-start"), p]))
            name = f"bench-raw-{os.getpid()}-{i}"
            (ws / p).mkdir(parents=True, exist_ok=True)
            raw = ["docker", "create", "--name", name, "--user", f"{pw.pw_uid}:{pw.pw_gid}",
                   "--cpus", str(min(4, os.cpu_count() or 1)), "--memory", "16g", "--memory-swap", "16g",
                   "--shm-size", "2g", "--pids-limit", "4096", "--cap-drop", "ALL",
                   "--security-opt", "no-new-privileges", "--init", "--runtime", "nvidia",
                   "-e", "NVIDIA_VISIBLE_DEVICES=void", "-v", f"{ws / p}:/workspace", "-w", "/workspace",
                   "--label", "ds01.bench=1", *net_args, TEST_IMAGE, "sleep", "infinity"]
            dk.append(timed([*as_root, *raw]) + timed([*as_root, "docker", "start", name]))
        ratio = statistics.median(a / b for a, b in zip(ds, dk))
        rows.append(("container-create+start" + (" (raw on bridge)" if args.bridge_baseline else ""),
                     statistics.median(ds), statistics.median(dk), ratio, 1.3))

        # -- container-run P -- true vs docker exec <c> true (both containers running) ---------
        raw0 = f"bench-raw-{os.getpid()}-0"
        run_ds, run_dk = [], []
        for _ in range(args.rounds):
            run_ds.append(timed([*as_user, str(BIN / "container-run"), "bench-0", "--", "true"]))
            run_dk.append(timed([*as_root, "docker", "exec", raw0, "true"]))
        rows.append(("container-run P -- true vs docker exec", statistics.median(run_ds), statistics.median(run_dk),
                     statistics.median(a / b for a, b in zip(run_ds, run_dk)), 1.3))
        # -- the image-environment file login shells source, vs a shell that does not ---------
        # (the file exists when the image declares an environment: the lab base does, busybox not)
        try:
            client.images.get("ds01/base:latest")
            subprocess.run([*as_user, str(BIN / "container-deploy"), "bench-env", "--image", "ds01/base:latest",
                            "--background"], check=True, stdout=subprocess.DEVNULL)
            env_c = next(c for c in d.containers(client) if c.name.endswith("-bench-env"))
        except Exception as e:  # no lab base here: say so rather than measure nothing
            print(f"(no env-file row: {e})")
            env_c = None
        if env_c is not None:
            env_on, env_off = [], []
            for _ in range(args.rounds):
                env_on.append(timed([*as_root, "docker", "exec", env_c.id, "sh", "-c",
                                     ". /etc/profile.d/00-ds01-env.sh; true"]))
                env_off.append(timed([*as_root, "docker", "exec", env_c.id, "sh", "-c", "true"]))
            rows.append(("shell start with the env file vs without", statistics.median(env_on),
                         statistics.median(env_off), statistics.median(a / b for a, b in zip(env_on, env_off)), 1.05))

        # -- list with N containers -----------------------------------------------------------
        for i in range(args.rounds, args.list_size):
            subprocess.run([*as_user, str(BIN / "container-create"), f"bench-{i}"], check=True,
                           stdout=subprocess.DEVNULL)
        ls_ds, ls_dk = [], []
        for _ in range(args.rounds):
            ls_ds.append(timed([*as_user, str(BIN / "container-list"), "--all"]))
            ls_dk.append(timed([*as_root, "docker", "ps", "-a"]))
        rows.append(("container-list (50) vs docker ps -a", statistics.median(ls_ds), statistics.median(ls_dk),
                     statistics.median(a / b for a, b in zip(ls_ds, ls_dk)), 4.0))

        helps = [timed([str(BIN / "container-list"), "--help"]) for _ in range(args.rounds)]
        rows.append(("container-list --help (absolute)", statistics.median(helps), None, None, 0.150))
    finally:
        d.stop()
        for c in d.containers(client) + client.containers.list(all=True, filters={"label": "ds01.bench=1"}):
            c.remove(force=True)
        for n in client.networks.list(filters={"label": "ds01.bench=1"}):
            n.remove()
        for i in range(args.list_size):
            shutil.rmtree(ws / f"bench-{i}", ignore_errors=True)
        shutil.rmtree(d.root, ignore_errors=True)

    print(f"{'benchmark':40} {'ds01 (s)':>9} {'docker (s)':>10} {'ratio':>7} {'bar':>6}  verdict")
    for name, a, b, r, bar in rows:
        if r is None:
            verdict = "PASS" if a <= bar else "FAIL"
            print(f"{name:40} {a:9.3f} {'-':>10} {'-':>7} {bar:6.3f}  {verdict}")
        else:
            verdict = "PASS" if r <= bar else "FAIL"
            print(f"{name:40} {a:9.3f} {b:10.3f} {r:7.2f} {bar:6.1f}  {verdict}")


if __name__ == "__main__":
    main()
