"""Promise (issue 15, item 10): ``ds01 admin doctor`` sees the host settings isolation relies on —
/proc without hidepid=2, world-readable homes, the NVIDIA runtime's volume-mount device lists, a
non-empty docker group, the daemon's own files open to others — and says how to fix each; exits
non-zero on a warning with ``--strict``. Run as a member of the admin group (not root), against
deliberately weak settings handed in as files, and the daemon's own log directory made readable."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import tempfile

import pytest

from tests.integration.harness import USERS, ok


@pytest.fixture
def host(tmp_path_factory):
    """A readable scratch directory for the weak and the strong variant of each setting."""
    d = tempfile.mkdtemp(prefix="ds01-doctor-")
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


def make(host: str, weak: bool) -> list[str]:
    homes = os.path.join(host, "weak-homes" if weak else "homes")
    os.makedirs(os.path.join(homes, "someone"))
    os.chmod(homes, 0o755)
    os.chmod(os.path.join(homes, "someone"), 0o755 if weak else 0o750)
    mounts = os.path.join(host, "mounts-weak" if weak else "mounts")
    with open(mounts, "w") as f:
        f.write("sysfs /sys sysfs rw 0 0\n")
        f.write("proc /proc proc rw,relatime 0 0\n" if weak else "proc /proc proc rw,relatime,hidepid=invisible 0 0\n")
    nvidia = os.path.join(host, "nvidia-weak.toml" if weak else "nvidia-absent.toml")
    if weak:
        with open(nvidia, "w") as f:
            f.write('disable-require = false\naccept-nvidia-visible-devices-as-volume-mounts = true\n'
                    '[nvidia-container-cli]\nldconfig = "@/sbin/ldconfig"\n')
    for p in (mounts, nvidia):
        if os.path.exists(p):
            os.chmod(p, 0o644)
    # weak: a group with a member (the admin group has one); strong: a group that does not exist
    group = grp.getgrnam("ds01-admin").gr_name if weak else "ds01-no-such-group"
    return ["--homes", homes, "--proc-mounts", mounts, "--nvidia-config", nvidia, "--docker-group", group]


def doctor(daemon, *args: str) -> tuple[int, dict]:
    r = daemon.run("adm", "ds01", "admin", "doctor", "--json", *args)
    return r.returncode, json.loads(r.stdout)


def by_name(out: dict) -> dict[str, dict]:
    return {c["check"]: c for c in out["checks"]}


def test_doctor_sees_each_weak_setting_and_names_the_fix(daemon, host):
    code, out = doctor(daemon, *make(host, weak=True))
    assert code == 0  # warnings only fail with --strict
    c = by_name(out)
    assert c["proc-hidepid"]["status"] == "warn" and "hidepid=2" in c["proc-hidepid"]["fix"]
    assert c["homes-private"]["status"] == "warn" and "someone" in c["homes-private"]["detail"]
    assert "chmod" in c["homes-private"]["fix"]
    assert c["nvidia-volume-mounts"]["status"] == "warn"
    assert "accept-nvidia-visible-devices-as-volume-mounts = false" in c["nvidia-volume-mounts"]["fix"]
    assert c["docker-group"]["status"] == "warn" and USERS["adm"] in c["docker-group"]["detail"]
    assert out["warnings"] >= 4
    code, _ = doctor(daemon, "--strict", *make_again(host, True))
    assert code == 1


def make_again(host: str, weak: bool) -> list[str]:
    sub = tempfile.mkdtemp(dir=host)
    os.chmod(sub, 0o755)
    return make(sub, weak)


def test_doctor_passes_strong_settings(daemon, host):
    code, out = doctor(daemon, *make(host, weak=False))
    c = by_name(out)
    for name in ("proc-hidepid", "homes-private", "nvidia-volume-mounts", "docker-group"):
        assert c[name]["status"] == "ok", c[name]
    assert "does not exist" in c["nvidia-volume-mounts"]["detail"]  # absent = fine
    daemon_checks = [n for n in c if n.startswith("daemon:")]
    assert {"daemon:state-dir", "daemon:log-dir", "daemon:config"} <= set(daemon_checks)


def test_doctor_sees_the_daemons_own_files_open_to_others(daemon, host):
    log_dir = daemon.root / "var/log/ds01"
    mode = os.stat(log_dir).st_mode & 0o7777
    os.chmod(log_dir, 0o755)
    try:
        code, out = doctor(daemon, "--strict", *make(host, weak=False))
        c = by_name(out)["daemon:log-dir"]
        assert c["status"] == "warn" and "0755" in c["detail"] and "chmod 0750" in c["fix"]
        assert code == 1
    finally:
        os.chmod(log_dir, mode)
    out = doctor(daemon, *make_again(host, False))[1]
    assert by_name(out)["daemon:log-dir"]["status"] == "ok"


def test_doctor_reads_the_real_host_and_the_daemon_part_is_for_admins(daemon):
    r = ok(daemon.run("adm", "ds01", "admin", "doctor"))  # the real host's settings, whatever they are
    for name in ("proc-hidepid", "homes-private", "nvidia-volume-mounts", "docker-group", "daemon:state-dir"):
        assert name in r.stdout
    assert "warning(s)" in r.stdout
    r = daemon.run("alice", "ds01", "admin", "doctor", "--json")
    out = json.loads(r.stdout)
    assert by_name(out)["daemon"]["status"] == "warn" and "admins" in by_name(out)["daemon"]["detail"]
