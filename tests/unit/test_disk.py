"""Disk (issue 16): the pure decisions (policy/disk.py), the bounded walk, and DiskService with a
fake engine, store and quota tools (services/disk.py)."""

from __future__ import annotations

import os
import pwd
from types import SimpleNamespace

import pytest

from ds01.models.config import Config, parse_config
from ds01.policy import disk as policy
from ds01.policy.limits import effective_limits
from ds01.services.disk import DiskService, walk_bytes

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 22 7:0 / /srv/lab\\040ws rw,relatime - ext4 /dev/loop0 rw,quota,usrquota\n"
    "31 22 0:40 / /srv/lab\\040ws/tmp rw - tmpfs tmpfs rw\n"
    "32 22 8:2 / /data rw - xfs /dev/vdb rw,uqnoenforce\n"
)


def test_mountinfo_and_the_mount_a_path_is_on():
    ms = policy.parse_mountinfo(MOUNTINFO)
    assert [m.point for m in ms] == ["/", "/srv/lab ws", "/srv/lab ws/tmp", "/data"]
    assert policy.mount_of("/srv/lab ws/alice/p", ms).source == "/dev/loop0"
    assert policy.mount_of("/srv/lab ws/tmp/x", ms).fstype == "tmpfs"
    assert policy.mount_of("/srv/lab wsx", ms).point == "/"  # a prefix of the name is not a parent
    assert "usrquota" in policy.mount_of("/srv/lab ws", ms).options


def test_quota_support_says_why_not():
    ms = {m.point: m for m in policy.parse_mountinfo(MOUNTINFO)}
    assert policy.quota_support(ms["/srv/lab ws"], True).enforced
    s = policy.quota_support(ms["/srv/lab ws"], False)
    assert not s.enforced and s.why.startswith("not enforced here") and "quotaon" in s.why
    assert "tmpfs" in policy.quota_support(ms["/srv/lab ws/tmp"], True).why
    assert "not mounted with usrquota" in policy.quota_support(ms["/"], True).why
    assert "usrquota" in policy.quota_support(ms["/data"], True).why  # XFS without enforcement
    assert "quota' package" in policy.quota_support(ms["/srv/lab ws"], None).why
    assert "switched off" in policy.quota_support(ms["/srv/lab ws"], True, enabled=False).why
    assert not policy.quota_support(None, True).enforced


def test_setquota_and_repquota():
    assert policy.setquota_argv(1001, 1025, "/m") == ["setquota", "-u", "1001", "0", "2", "0", "0", "/m"]
    assert policy.setquota_argv(1001, 0, "/m")[4] == "0"  # clears the hard limit
    csv = ("User,BlockStatus,FileStatus,BlockUsed,BlockSoftLimit,BlockHardLimit,BlockGrace,FileUsed\n"
           "#0,ok,ok,20,0,0,,2\n#1001,over,ok,30720,0,20480,,5\n")
    assert policy.parse_repquota_csv(csv) == {0: (20480, 0), 1001: (30720 * 1024, 20480 * 1024)}


def test_image_bytes_count_shared_layers_once():
    base = [{"Created": 1, "CreatedBy": "ADD rootfs", "Size": 100}, {"Created": 2, "CreatedBy": "ENV A=1", "Size": 0}]
    a = [{"Created": 3, "CreatedBy": "RUN a", "Size": 10}] + base[::-1]
    b = [{"Created": 4, "CreatedBy": "RUN b", "Size": 20}] + base[::-1]
    la, lb = policy.history_layers(a), policy.history_layers(b)
    assert [s for _, s in la] == [100, 10] and la[0] == lb[0] and la[1] != lb[1]
    assert policy.image_bytes({"a": la, "b": lb}) == 130
    # the same step on a different base is a different layer
    other = policy.history_layers([{"Created": 3, "CreatedBy": "RUN a", "Size": 10},
                                   {"Created": 1, "CreatedBy": "ADD other", "Size": 100}])
    assert policy.image_bytes({"a": la, "o": other}) == 220
    assert policy.image_bytes({"a": la, "x": 55}) == 165  # layers unknown: its own size


def test_warning_repeats_at_its_interval():
    assert policy.over_limit(11, 10) and not policy.over_limit(11, 0) and not policy.over_limit(None, 10)
    assert policy.should_warn(True, None, 100, 60)
    assert not policy.should_warn(True, 50, 100, 60) and policy.should_warn(True, 40, 100, 60)
    assert not policy.should_warn(False, None, 100, 60)


def test_max_workspace_bytes_is_a_limit_like_the_others():
    cfg = parse_config("defaults: {max_workspace_bytes: 10g}\n"
                       "groups: [{name: phd, members: [bob], limits: {max_workspace_bytes: 50g}}]\n"
                       "users: {carol: {max_workspace_bytes: 1t}, bob: {max_gpus: 2}}\n")
    assert effective_limits(cfg, "alice", set()).max_workspace_bytes == 10 * 1024**3
    lb = effective_limits(cfg, "bob", set())
    assert lb.max_workspace_bytes == 50 * 1024**3 and lb.sources["max_workspace_bytes"] == "group:phd"
    assert effective_limits(cfg, "carol", set()).max_workspace_bytes == 1024**4
    assert effective_limits(Config(), "x", set()).max_workspace_bytes == 0  # no limit by default
    assert Config().disk.sample_interval == 600


def test_walk_counts_like_du_and_stays_bounded(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "d" / "f", tmp_path / "hard")
    (tmp_path / "out").symlink_to("/usr")  # never followed
    w = walk_bytes(str(tmp_path), 10, 10_000)
    blocks = os.stat(tmp_path / "d" / "f").st_blocks * 512
    assert not w.partial and blocks <= w.bytes < blocks + 64 * 1024 and w.entries == 4
    for i in range(2000):
        (tmp_path / "d" / f"e{i}").touch()
    cut = walk_bytes(str(tmp_path), 10, 1000)
    assert cut.partial and cut.entries == 1000
    assert walk_bytes(str(tmp_path / "out"), 10, 1000).partial  # a symlinked base is not walked


class FakeQuotas:
    def __init__(self, on=True):
        self.on, self.calls, self.used = on, [], {}

    def quotas_on(self, mount):
        return self.on

    def set(self, uid, limit, mount):
        self.calls.append((uid, limit, mount))
        return None

    def report(self, mount):
        return self.used


def _service(tmp_path, on=True, limit="0", running=True):
    me = pwd.getpwuid(os.getuid())
    ws = tmp_path / "ws"
    (ws / me.pw_name / "p").mkdir(parents=True)
    (ws / me.pw_name / "p" / "data").write_bytes(b"y" * 300_000)
    mi = tmp_path / "mountinfo"
    mi.write_text(f"22 1 8:1 / / rw - ext4 /dev/vda rw\n30 22 7:0 / {ws} rw - ext4 /dev/loop0 rw,usrquota\n")
    cfg = parse_config(f"containers: {{workspace_base: '{ws}/{{user}}'}}\n"
                       f"users: {{{me.pw_name}: {{max_workspace_bytes: {limit}}}}}\n"
                       "disk: {sample_interval: 60}\n")
    rec = SimpleNamespace(uid=os.getuid(), project="p", status="running" if running else "exited")
    events = []
    images = [SimpleNamespace(id="sha256:a", size=500, tags=["t"]), SimpleNamespace(id="sha256:b", size=700, tags=[])]
    hist = {"sha256:a": [{"Created": 2, "CreatedBy": "RUN a", "Size": 100}, {"Created": 1, "CreatedBy": "B", "Size": 400}],
            "sha256:b": [{"Created": 3, "CreatedBy": "RUN b", "Size": 300}, {"Created": 1, "CreatedBy": "B", "Size": 400}]}
    now = [1000.0]
    ctx = SimpleNamespace(
        config=cfg, instance="t", clock=lambda: now[0], mounts_dir=None,
        store=SimpleNamespace(live_containers=lambda uid=None: [rec]),
        runtime=SimpleNamespace(image_list=lambda sel: images, image_history=lambda ref: hist[ref]),
        events=SimpleNamespace(emit=lambda action, **kw: events.append((action, kw))))
    told = []
    q = FakeQuotas(on)
    svc = DiskService(ctx, lambda who: effective_limits(ctx.config, who.name, set(who.groups)),
                      notify_fn=lambda who, project, text: told.append((project, text)), quotas=q, mountinfo=mi)
    return svc, ctx, q, events, told, now


def test_service_measures_in_the_background_and_reports(tmp_path):
    svc, ctx, q, events, told, now = _service(tmp_path, on=False)
    who = SimpleNamespace(uid=os.getuid(), name=pwd.getpwuid(os.getuid()).pw_name)
    lim = effective_limits(ctx.config, who.name, set())
    first = svc.usage(who, lim)
    assert first["measured"] is False and "measuring now" in first["note"]
    assert svc.wait_idle(10)
    d = svc.usage(who, lim)
    assert d["measured"] and d["workspace_bytes"] >= 300_000 and not d["partial"]
    assert d["image_bytes"] == 800 and d["images"] == 2 and d["shared_layers_counted_once"]
    assert not d["enforced"] and d["enforcement"].startswith("not enforced here") and q.calls == []
    assert svc.tick() == 0  # measured a moment ago: not due again before sample_interval
    now[0] += 61
    assert svc.tick() == 1 and svc.wait_idle(10)
    svc.close()


def test_quota_is_set_changed_and_cleared_and_over_quota_warns(tmp_path):
    svc, ctx, q, events, told, now = _service(tmp_path, on=True, limit="100k")
    uid = os.getuid()
    v = svc.measure(uid)
    assert v["enforced"] and v["enforcement"].startswith("enforced: ext4 user quota")
    assert q.calls == [(uid, 100 * 1024, str(tmp_path / "ws"))]
    assert [e[0] for e in events] == ["disk.quota", "disk.warn"]
    assert told and "over your limit of 100.0 KiB" in told[0][1] and "Disk quota exceeded" in told[0][1]
    svc.measure(uid)  # same limit: no second setquota, no second warning within warn_interval
    assert len(q.calls) == 1 and len(told) == 1
    now[0] += ctx.config.disk.warn_interval
    svc.measure(uid)
    assert len(told) == 2
    ctx.config = ctx.config.model_copy(update={"users": {}})  # limit unset (a reload): ours is cleared
    svc.measure(uid)
    assert q.calls[-1] == (uid, 0, str(tmp_path / "ws")) and len(told) == 2
    svc.measure(uid)
    assert len(q.calls) == 2  # nothing of ours left to clear: an admin's own quota is never touched


def test_not_enforced_still_warns_and_says_so(tmp_path):
    svc, ctx, q, events, told, now = _service(tmp_path, on=False, limit="100k")
    svc.measure(os.getuid())
    assert q.calls == [] and "not enforced on this filesystem" in told[0][1]
    svc2, *_rest, told2, _now = _service(tmp_path / "b", on=False, limit="100k", running=False)
    svc2.measure(os.getuid())
    assert told2 == []  # no running container: nobody to warn


@pytest.mark.parametrize("d, expect", [
    (None, []),
    ({"measured": False, "note": "not measured yet"}, ["disk: not measured yet"]),
])
def test_check_limits_lines(d, expect):
    from ds01.cli.commands.gpus import disk_lines, disk_row

    assert disk_lines(d) == expect
    assert disk_row(0, d)[1] == "no limit"


def test_check_limits_lines_measured():
    from ds01.cli.commands.gpus import disk_lines, disk_row

    d = {"measured": True, "workspace": "/w", "workspace_bytes": 3 * 1024**2, "partial": True, "age_s": 30,
         "image_bytes": 2048, "images": 1, "shared_layers_counted_once": False, "max_workspace_bytes": 1024**2,
         "enforcement": "not enforced here: tmpfs at / has no user quotas", "enforced": False, "over": True,
         "used_bytes": 3 * 1024**2, "left_bytes": 0, "quota_used_bytes": None}
    text = "\n".join(disk_lines(d))
    assert "each image's own size" in text and "at least" in text and "not enforced here" in text
    assert "over your limit" in text
    assert disk_row(1024**2, d)[2].startswith("≥ ")
