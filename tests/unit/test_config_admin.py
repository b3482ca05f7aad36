"""Reload and limits edits without a daemon (issue 16): an invalid file changes nothing, the swap
keeps restart-only settings at their running value and names them, limits edits keep comments."""

from __future__ import annotations

import pwd
from types import SimpleNamespace

import pytest

from ds01.errors import ConfigError, InvalidInput
from ds01.models.config import Config, parse_config
from ds01.models.config_edit import edit_limits, parse_assignments
from ds01.services.config_admin import ConfigAdmin, changed_keys

TEXT = """# the lab's config
admin_group: ds01-admin   # who may run `ds01 admin`
daemon:
  instance: lab
defaults:
  max_gpus: 1   # one GPU each
groups:
- name: students
  members: [root]
  limits:
    max_gpus: 0.5  # half a GPU
users:
  # an override
  root:
    max_containers: 5
"""


class Events:
    def __init__(self):
        self.rows: list[tuple] = []

    def emit(self, action, **kw):
        self.rows.append((action, kw))


def admin(tmp_path, text=TEXT):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    ctx = SimpleNamespace(config=parse_config(text), events=Events(), store=None)
    return ConfigAdmin(ctx, p), ctx, p


def test_invalid_file_changes_nothing_and_names_key_and_line(tmp_path):
    ca, ctx, p = admin(tmp_path)
    before = ctx.config
    p.write_text(TEXT.replace("max_containers: 5", "max_containerz: 5"))
    with pytest.raises(ConfigError) as e:
        ca.reload()
    assert "users.root.max_containerz" in e.value.message and ":15:" in e.value.message
    assert "nothing was changed" in e.value.message
    assert ctx.config is before
    assert ctx.events.rows[-1][0] == "config.reload" and ctx.events.rows[-1][1]["result"] == "error"


def test_reload_applies_live_and_keeps_restart_keys(tmp_path):
    ca, ctx, p = admin(tmp_path)
    p.write_text(TEXT.replace("instance: lab", "instance: other").replace("max_gpus: 1 ", "max_gpus: 2 "))
    out = ca.reload()
    assert ctx.config.defaults.max_gpus == 2 and ctx.config.daemon.instance == "lab"
    assert out["changed"] == ["defaults.max_gpus"]
    assert [r["key"] for r in out["restart_required"]] == ["daemon.instance"]
    assert out["restart_required"][0]["running"] == "lab" and out["restart_required"][0]["file"] == "other"
    # still named on the next reload, until a restart
    assert [r["key"] for r in ca.reload()["restart_required"]] == ["daemon.instance"]


def test_changed_keys_are_dotted_leaves():
    a = Config()
    b = parse_config("users: {bob: {max_gpus: 2}}\nqueue: {aging: 2h}\n")
    assert changed_keys(a, b) == ["queue.aging", "users.bob.max_gpus"]


def test_edit_keeps_comments_and_order():
    new, changes = edit_limits(TEXT, "root", None, {"max_gpus": 2}, [])
    assert changes == {"max_gpus": {"from": None, "to": 2}}
    assert "# the lab's config" in new and "# who may run `ds01 admin`" in new and "# an override" in new
    assert "# half a GPU" in new and "# one GPU each" in new
    assert new.index("admin_group") < new.index("daemon:") < new.index("groups:") < new.index("users:")
    cfg = parse_config(new)
    assert cfg.users["root"].max_gpus == 2 and cfg.users["root"].max_containers == 5
    new2, changes2 = edit_limits(new, None, "students", {"idle_timeout": "1h"}, ["max_gpus"])
    assert changes2 == {"idle_timeout": {"from": None, "to": "1h"}, "max_gpus": {"from": 0.5, "to": None}}
    g = parse_config(new2).groups[0]
    assert g.limits.idle_timeout == 3600 and g.limits.max_gpus is None


def test_unset_of_the_last_override_drops_the_user():
    new, _ = edit_limits(TEXT, "root", None, {}, ["max_containers"])
    assert "root" not in parse_config(new).users


def test_assignments_are_checked():
    assert parse_assignments(["max_gpus=2", "memory=32g", "allow_mig=false"]) == {
        "max_gpus": 2, "memory": "32g", "allow_mig": False}
    with pytest.raises(InvalidInput, match="did you mean max_gpus"):
        parse_assignments(["max_gpu=2"])
    with pytest.raises(InvalidInput, match="KEY=VALUE"):
        parse_assignments(["max_gpus"])


def test_limits_change_writes_validates_reloads_and_audits(tmp_path):
    ca, ctx, p = admin(tmp_path)
    p.chmod(0o640)
    actor = SimpleNamespace(name="adm", uid=1234)
    out = ca.limits_change(actor, "root", None, False, {"max_gpus": 3}, [])
    assert out["changes"] == {"max_gpus": {"from": None, "to": 3}}
    assert ctx.config.users["root"].max_gpus == 3
    assert (p.stat().st_mode & 0o777) == 0o640 and "# an override" in p.read_text()
    ev = [r for r in ctx.events.rows if r[0] == "config.limits"][-1][1]
    assert ev["user"] == "adm" and ev["target"] == "user:root" and ev["data"]["changes"]["max_gpus"]["to"] == 3
    # invalid value: refused, file untouched
    text = p.read_text()
    with pytest.raises(ConfigError, match="users.root.max_gpus"):
        ca.limits_change(actor, "root", None, False, {"max_gpus": -1}, [])
    assert p.read_text() == text and ctx.config.users["root"].max_gpus == 3
    with pytest.raises(Exception, match="no account"):
        ca.limits_change(actor, "no-such-user-x", None, False, {"max_gpus": 1}, [])
    assert pwd.getpwnam("root")


def test_every_restart_key_names_a_setting_and_is_kept_running():
    from ds01.services.config_admin import RESTART_KEYS, _get, keep_running

    old = Config()
    new = parse_config("daemon: {max_connections: 99, connection_idle_timeout: 9, tick_interval: 5}\n"
                       "gpu: {inventory: none}\ncontainers: {name_prefix: other}\n")
    kept = keep_running(old, new)
    for key in RESTART_KEYS:
        assert _get(kept, key.split(".")) == _get(old, key.split("."))
    assert kept.daemon.tick_interval == 5  # live settings come from the file


def test_limits_set_without_a_config_file_creates_one(tmp_path):
    ctx = SimpleNamespace(config=Config(), events=Events(), store=None)
    p = tmp_path / "etc/ds01/config.yaml"
    ca = ConfigAdmin(ctx, p)
    ca.limits_change(SimpleNamespace(name="root", uid=0), "root", None, False, {"max_gpus": 2}, [])
    assert parse_config(p.read_text()).users["root"].max_gpus == 2 and ctx.config.users["root"].max_gpus == 2
    assert (p.stat().st_mode & 0o777) == 0o644


def test_engine_checks_want_no_new_privileges_for_build_steps():
    from ds01.services.config_admin import engine_checks

    (good,) = engine_checks(["name=seccomp,profile=default", "name=no-new-privileges"])
    (weak,) = engine_checks(["name=seccomp,profile=default"])
    (unknown,) = engine_checks(None)
    assert good["status"] == "ok"
    assert weak["status"] == "warn" and "no-new-privileges" in weak["fix"]
    assert unknown["status"] == "warn"
