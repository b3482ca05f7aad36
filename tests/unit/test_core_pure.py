"""Pure core of the secure base: names, units, config validation, container policy, accounts,
the error table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01 import errors
from ds01.models.config import Config, parse_config
from ds01.names import PROJECT_RE, container_name, image_name, validate_project
from ds01.policy.containers import build_spec, gpu_env, resolve_ref
from ds01.runtime.accounts import merge_account
from ds01.runtime.base import Account
from ds01.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize("name", ["a", "thesis", "proj-1", "x.y_z", "0abc", "a" * 63])
def test_valid_project_names(name):
    assert validate_project(name) == name


@pytest.mark.parametrize("name", ["", "../x", "/etc", "..", "a" * 64, "Upper", "a/b", "-x", ".x", "_x", "a..b",
                                  "a b", "a\nb", "evil\n", "evil\r\n", None, 3])
def test_invalid_project_names(name):
    with pytest.raises(errors.InvalidInput) as e:
        validate_project(name)
    assert e.value.hint


@given(st.text(max_size=80))
def test_accepted_names_can_never_escape_a_directory(name):
    try:
        validate_project(name)
    except errors.InvalidInput:
        return
    assert "/" not in name and ".." not in name and not name.startswith(".") and PROJECT_RE.match(name)


def test_container_and_image_names():
    assert container_name("ds01", 1001, "thesis") == "ds01-1001-thesis"
    assert image_name("alice.smith", "p", 1001) == "ds01/alice.smith/p"
    # names that are not a repository component as they are map by uid: one-to-one
    assert image_name("Alice.Smith", "p", 1001) == "ds01/u.1001/p"
    assert image_name("alice-", "p", 1002) == "ds01/u.1002/p"
    assert image_name("u.7", "p", 1003) == "ds01/u.1003/p"  # shaped like the fallback


@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), st.integers(0, 10**6)),
                unique_by=(lambda t: t[0], lambda t: t[1])))
def test_image_namespaces_are_one_to_one(accounts):
    from ds01.names import image_namespace

    spaces = [image_namespace(name, uid) for name, uid in accounts]
    assert len(set(spaces)) == len(spaces)


@pytest.mark.parametrize("text,expected", [("512m", 512 * 2**20), ("32g", 32 * 2**30), ("1.5GiB", int(1.5 * 2**30)),
                                           (1024, 1024), ("10", 10), ("2t", 2 * 2**40)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [("30m", 1800), ("48h", 172800), ("1h30m", 5400), ("90", 90), (15, 15),
                                           ("7d", 604800), ("2w", 1209600), ("500ms", 0.5)])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["lots", "3x", "h", "", "-5", True])
def test_bad_units_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size(bad)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_roundtrip_is_monotone(n):
    assert parse_duration(n) == n and format_duration(n)


def test_embedded_defaults_are_complete():
    cfg = Config()
    assert cfg.defaults.max_gpus == 1.0 and cfg.daemon.socket_mode == 0o666 and cfg.gpu.binding == "runtime"


def test_partial_defaults_keep_the_rest():
    cfg = parse_config("defaults:\n  memory: 8g\n")
    assert cfg.defaults.memory == 8 * 2**30 and cfg.defaults.max_gpus == 1.0


@pytest.mark.parametrize("text,key,line", [
    ("containers:\n  stop_timout: 5\n", "containers.stop_timout", 2),
    ("defaults:\n  memory: lots\n", "defaults.memory", 2),
    ("gpu:\n  binding: magic\n", "gpu.binding", 2),
    ("admin_group: x\nusers:\n  bob:\n    max_gpus: -1\n", "users.bob.max_gpus", 4),
    ("groups:\n  - name: a\n  - name: a\n", "groups", 1),
])
def test_config_errors_name_key_and_line(text, key, line):
    with pytest.raises(errors.ConfigError) as e:
        parse_config(text, "c.yaml")
    assert key in e.value.message
    if key != "groups":
        assert f"c.yaml:{line}: {key}" in e.value.message


def test_config_not_a_mapping():
    with pytest.raises(errors.ConfigError):
        parse_config("- a\n- b\n")


class _Who:
    uid, gid, name, group = 1001, 1002, "alice", "alice"


class _Lim:
    cpus, memory, shm_size, pids = 8.0, 2**30, 2**28, 512


def test_spec_is_decided_by_the_daemon():
    spec = build_spec(Config(), _Who(), "p", "ds01/base:latest", _Lim(), "/home/alice/workspace/p", 1.0, "default",
                      host_cpus=2)
    assert spec.account.uid == 1001 and spec.env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert [m.target for m in spec.mounts] == ["/workspace"] and not spec.mounts[0].read_only
    assert spec.cpus == 2.0  # clamped to the host
    assert spec.labels["ds01.uid"] == "1001" and spec.labels["ds01.managed"] == "true"
    assert spec.runtime == "nvidia" and spec.workdir == "/workspace"


@given(st.lists(st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12), max_size=4))
def test_gpu_env_is_always_explicit(ids):
    env = gpu_env(ids)
    assert env["NVIDIA_VISIBLE_DEVICES"] == (",".join(ids) or "void")
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(ids)


class _Rec:
    def __init__(self, project, name, did):
        self.project, self.docker_name, self.docker_id = project, name, did


def test_resolve_ref_by_project_name_or_id_prefix():
    recs = [_Rec("a", "ds01-1-a", "abcdef123456"), _Rec("b", "ds01-1-b", "abc999000000")]
    assert resolve_ref("a", recs).project == "a"
    assert resolve_ref("ds01-1-b", recs).project == "b"
    assert resolve_ref("abcdef", recs).project == "a"
    for ref in ("abc", "abc9", "zzz", "c"):  # too short, ambiguous or unknown: same answer as missing
        with pytest.raises(errors.NotFound) as e:
            resolve_ref(ref, recs)
        assert e.value.message == f"you have no container {ref!r}"


def test_merge_account_replaces_clashing_entries():
    acct = Account(name="alice", uid=1001, gid=1002, group="alice", home="/home/alice")
    pw, gr = merge_account("root:x:0:0::/root:/bin/sh\nubuntu:x:1001:1001::/home/ubuntu:/bin/bash\n",
                           "root:x:0:\nubuntu:x:1002:\n", acct)
    assert "ubuntu" not in pw and "alice:x:1001:1002:alice:/home/alice:/bin/sh" in pw and pw.startswith("root:")
    assert "alice:x:1002:" in gr and "ubuntu" not in gr
    pw2, _ = merge_account(None, None, acct)
    assert pw2.startswith("root:") and "alice" in pw2


def test_every_error_code_maps_back_to_its_class():
    seen_exit = {}
    for code, cls in errors.ERRORS.items():
        e = errors.from_dict(cls("m", "h").to_dict())
        assert type(e) is cls and e.message == "m" and e.hint == "h"
        assert cls.exit_code not in seen_exit or cls is errors.DS01Error, (cls, seen_exit)
        seen_exit[cls.exit_code] = cls
    assert isinstance(errors.from_dict({"code": "nonsense", "message": "x"}), errors.DS01Error)


def test_events_are_bounded_and_pruned(tmp_path):
    import json as _json

    from ds01.services.events import MAX_DATA, EventLog
    from ds01.state.db import Store

    store = Store(tmp_path / "s.db")
    log = EventLog(tmp_path / "e.jsonl", store)
    ev = log.emit("api.post", user="bob", uid=2, target="/v1/" + "x" * 9000, reason="r" * 9000,
                  data={"message": "m" * 50000})
    assert len(ev["target"]) <= 300 and len(ev["reason"]) <= 500
    assert len(_json.dumps(ev["data"])) <= MAX_DATA + 100
    line = (tmp_path / "e.jsonl").read_text()
    assert len(line) < 6000
    store._execute("UPDATE events SET time = 1")
    assert store.prune_events(before=100) == 1 and store.events() == []


def test_a_release_from_an_old_snapshot_keeps_devices_taken_back_since(tmp_path):
    """The hold-after-stop release reads the stopped containers, then releases; a restart in
    between takes the devices back, and that new allocation must survive the release."""
    from ds01.state.db import ContainerRecord, Store

    store = Store(tmp_path / "s.db")
    rid = store.insert_container(uid=1, user="u", project="p", docker_name="d", image="i", status="exited",
                                 created_at=0.0, gpus=["GPU-1"])
    rec = ContainerRecord(id=rid, uid=1, user="u", project="p", docker_id=None, docker_name="d", image="i",
                          status="exited", created_at=0.0)
    with store.transaction() as conn:
        store.allocate(conn, rec, {"GPU-1": 1.0}, now=1.0)  # held from create (t=1); stopped at t=10
    stopped_at = 10.0
    assert store.release(rid, 15.0, "hold after stop expired", started_before=stopped_at) == 1
    with store.transaction() as conn:
        store.allocate(conn, rec, {"GPU-1": 1.0}, now=20.0)  # restarted: taken back at t=20
    # a second pass from a snapshot taken before the restart (still "exited", stopped at t=10)
    assert store.release(rid, 21.0, "hold after stop expired", started_before=stopped_at) == 0
    assert store.held_devices() == {"GPU-1": 1}


def test_cli_and_daemon_agree_on_the_socket_path(monkeypatch):
    from ds01.client.http import socket_path_from_env
    from ds01.paths import Paths

    monkeypatch.delenv("DS01_SOCKET", raising=False)
    monkeypatch.setenv("DS01_ROOT", "/tmp/r")
    assert socket_path_from_env() == str(Paths.under("/tmp/r").socket)
    monkeypatch.delenv("DS01_ROOT")
    assert socket_path_from_env() == str(Paths.under(None).socket) == "/run/ds01/ds01.sock"
    monkeypatch.setenv("DS01_SOCKET", "/x.sock")
    assert socket_path_from_env() == "/x.sock"


def test_help_never_imports_docker_nvml_or_pydantic():
    """--help must stay instant: the lazy registry keeps heavy modules out."""
    import subprocess
    import sys

    code = ("import sys\nfrom ds01.cli.app import cli\n"
            "try:\n    cli.main(['container-list', '--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('docker', 'pynvml', 'pydantic', 'aiohttp', 'rich', 'http.client')"
            " if m in sys.modules]\nprint('HEAVY:' + ','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY:"
