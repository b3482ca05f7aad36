"""services.jobs on a fake engine (issue 14): records and refusals, one fair queue for jobs and
interactive requests, job GPUs in max_gpus, and how an end is decided after restarts."""

from __future__ import annotations

import os
import pwd
import time
from types import SimpleNamespace

import pytest

from ds01.errors import InvalidInput, NotFound, PolicyDenied
from ds01.gpu.simulated import SimulatedSource
from ds01.models.config import Config
from ds01.models.gpu import GpuRequest
from ds01.runtime.base import ContainerInfo, ImageInfo
from ds01.services.containers import ContainerService
from ds01.services.context import Context
from ds01.services.events import EventLog
from ds01.services.gpus import GpuService
from ds01.services.identity import Caller
from ds01.services import jobs as jobs_mod
from ds01.services.jobs import JobService
from ds01.state.db import Store


class FakeEngine:
    def __init__(self):
        self.c: dict[str, dict] = {}

    def image_inspect(self, ref):
        return ImageInfo(id="sha256:" + "a" * 64, tags=[ref], labels={}, size=1, created=0.0)

    def create(self, spec):
        cid = f"{len(self.c) + 1:064x}"
        self.c[cid] = {"spec": spec, "status": "created", "exit": None}
        return ContainerInfo(id=cid, name=spec.name, status="created", image=spec.image, labels=spec.labels)

    def start(self, cid):
        self.c[cid]["status"] = "running"

    def stop(self, cid, timeout):
        if cid in self.c and self.c[cid]["status"] == "running":
            self.c[cid].update(status="exited", exit=143)

    def remove(self, ref, force=False):
        for cid, c in list(self.c.items()):
            if ref in (cid, c["spec"].name):
                del self.c[cid]
                return True
        return False

    def inspect(self, cid):
        c = self.c.get(cid)
        if c is None:
            return None
        return ContainerInfo(id=cid, name=c["spec"].name, status=c["status"], image="", exit_code=c["exit"])

    def list(self, labels):
        return [i for i in (self.inspect(cid) for cid in list(self.c)) if i is not None]

    def follow_logs(self, cid):
        # like the engine's: the output until the container stops
        while self.c.get(cid, {}).get("status") == "running":
            time.sleep(0.005)
        yield b"out\n"

    def prune_networks(self, selector):
        return 0


def wait_end(env, jid: int, timeout: float = 3.0):
    """The follower thread finishes a job once its container stopped."""
    end = time.time() + timeout
    while time.time() < end:
        j = env.ctx.store.get_job(jid)
        if j.state not in ("starting", "running"):
            return j
        time.sleep(0.01)
    pytest.fail(f"job {jid} did not end")


@pytest.fixture
def env(tmp_path, monkeypatch):
    me = pwd.getpwuid(os.getuid())
    home = tmp_path / "home"
    (home / "workspace" / "p").mkdir(parents=True)
    cfg = Config.model_validate({
        "gpu": {"inventory": "simulated", "simulated": {"gpus": [{}]}},
        "defaults": {"max_gpus": 1.0, "max_jobs_queued": 3, "max_jobs_running": 2, "max_runtime": "1h"}})
    store = Store(tmp_path / "state.db")
    src = SimulatedSource(cfg.gpu.simulated)
    engine = FakeEngine()
    now = [1000.0]
    ctx = Context(config=cfg, store=store, runtime=engine, events=EventLog(tmp_path / "events.jsonl", store),
                  instance="unit", gpu_source=src, inventory=src.read(), clock=lambda: now[0])
    marker = ["boot-1"]
    containers = ContainerService(ctx)
    jobs = JobService(ctx, containers, jobs_dir=str(tmp_path / "jobs"), boot_marker=lambda: marker[0])
    gpu = GpuService(containers, jobs=jobs)
    monkeypatch.setattr(jobs_mod, "git_state", lambda who, path: ("c" * 40, False))
    told = []
    monkeypatch.setattr("ds01.services.notify.notify", lambda who, project, text, *a: told.append(text))
    who = Caller(uid=me.pw_uid, gid=me.pw_gid, name=me.pw_name, home=str(home), group="g",
                 groups=frozenset(), is_admin=False)
    monkeypatch.setattr(jobs, "_who", lambda uid: who)
    return SimpleNamespace(ctx=ctx, jobs=jobs, gpu=gpu, engine=engine, now=now, who=who, marker=marker, told=told)


def test_submit_records_and_bad_input_leaves_nothing(env):
    out = env.jobs.submit(env.who, "p", ["python3", "-c", "print(42)"], time="30m", env=["A=1"])
    j = env.ctx.store.get_job(out["id"])
    assert j.state == "queued" and j.time_limit == 1800 and j.image_id.startswith("sha256:") and j.git_commit
    assert j.env == {"A": "1"} and j.command == ["python3", "-c", "print(42)"]
    n = len(env.ctx.store.jobs())
    bad = [
        (dict(project="nope", command=["true"]), NotFound),
        (dict(project="p", command=[]), InvalidInput),
        (dict(project="p", command=["true"], array="3-1"), InvalidInput),
        (dict(project="p", command=["true"], time="2h"), InvalidInput),
        (dict(project="p", command=["true"], after=[999]), NotFound),
        (dict(project="p", command=["true"], request=GpuRequest(gpus=4)), InvalidInput),
        (dict(project="p", command=["true"], array="0-5"), PolicyDenied),  # max_jobs_queued 3
        (dict(project="p", command=["true"], mail=True), InvalidInput),  # no relay configured
    ]
    for kw, err in bad:
        project, command = kw.pop("project"), kw.pop("command")
        with pytest.raises(err):
            env.jobs.submit(env.who, project, command, **kw)
    assert len(env.ctx.store.jobs()) == n


def test_one_fair_queue_for_jobs_and_interactive_requests(env):
    store = env.ctx.store
    # the GPU is held interactively by someone else; a GPU job waits for it
    other = SimpleNamespace(uid=4242, name="heavy")
    with store.transaction() as tx:
        row = store.insert_container(tx, uid=other.uid, user=other.name, project="x", docker_id="d" * 64,
                                     docker_name="ds01-4242-x", image="i", status="running", created_at=0.0)
        gpu = env.ctx.inventory.allocatable[0].uuid
        store.allocate(tx, store.get_container(row), {gpu: 1.0}, 0.0)
    jid = env.jobs.submit(env.who, "p", ["true"], request=GpuRequest(gpus=1))["id"]
    assert env.gpu.serve_queue() == [] and store.get_job(jid).state == "queued"
    assert [e["project"] for e in env.gpu.queue(None)] == [f"p (job {jid})"]
    store.release(row, 10.0, "removed")
    served = env.gpu.serve_queue()
    j = store.get_job(jid)
    assert served == [{"job": jid}] and j.state == "running" and j.gpus == [gpu]
    # its GPU counts in the user's holding (max_gpus), and interactive creates see it held
    assert store.holding(env.who.uid) == 1.0 and gpu in store.held_devices()
    spec = env.engine.c[j.docker_id]["spec"]
    assert spec.env["NVIDIA_VISIBLE_DEVICES"] == gpu and spec.command == ("true",)
    env.engine.c[j.docker_id].update(status="exited", exit=0)
    j = wait_end(env, jid)
    assert not env.jobs.finish(jid)  # once only
    assert open(env.jobs.log_path(jid)).read() == "out\n"
    assert j.state == "succeeded" and j.exit_code == 0 and store.holding(env.who.uid) == 0.0
    assert j.docker_id not in env.engine.c  # container removed, record kept
    end = time.time() + 3  # told right after the record changed, from the follower thread
    while time.time() < end and not any(f"job {jid}" in t and "succeeded" in t for t in env.told):
        time.sleep(0.01)
    assert any(f"job {jid}" in t and "succeeded" in t for t in env.told)


def test_cpu_jobs_respect_max_jobs_running_and_array_throttle(env):
    ids = env.jobs.submit(env.who, "p", ["true"], array="0-2%1")["ids"]
    env.jobs.tick()
    states = [env.ctx.store.get_job(i).state for i in ids]
    assert states == ["running", "queued", "queued"]
    spec = env.engine.c[env.ctx.store.get_job(ids[0]).docker_id]["spec"]
    assert spec.env["DS01_ARRAY_TASK_ID"] == "0" and spec.env["DS01_ARRAY_JOB_ID"] == str(ids[0])


def test_time_limit_then_timeout(env):
    jid = env.jobs.submit(env.who, "p", ["sleep", "99"], time="10s")["id"]
    env.jobs.tick()
    env.now[0] += 11
    env.jobs.tick()  # the stop runs in a thread; the follower then finishes the job
    j = wait_end(env, jid)
    assert j.state == "timeout" and "time limit" in j.reason


@pytest.mark.parametrize("requeue, state", [(False, "lost"), (True, "queued")])
def test_engine_restart_is_lost_or_requeued(env, requeue, state):
    jid = env.jobs.submit(env.who, "p", ["sleep", "99"], requeue=requeue)["id"]
    env.jobs.tick()
    j = env.ctx.store.get_job(jid)
    env.marker[0] = "boot-2"  # the engine restarted: it stopped the container
    env.engine.c[j.docker_id].update(status="exited", exit=143)
    j = wait_end(env, jid)
    assert j.state == state and "engine restarted" in j.reason and env.ctx.store.holding(env.who.uid) == 0.0


def test_recover_requeues_a_start_the_daemon_did_not_finish(env):
    jid = env.jobs.submit(env.who, "p", ["true"])["id"]
    env.ctx.store.update_job(jid, state="starting")
    assert env.jobs.recover() == {"requeued": 1, "followed": 0}
    assert env.ctx.store.get_job(jid).state == "queued"


def test_others_jobs_are_missing_and_cancel(env):
    jid = env.jobs.submit(env.who, "p", ["true"])["id"]
    bob = Caller(uid=env.who.uid + 1, gid=1, name="bob", home="/nonexistent", group="g", groups=frozenset(),
                 is_admin=False)
    for fn in (env.jobs.show, env.jobs.cancel, env.jobs.logs, env.jobs.rerun):
        with pytest.raises(NotFound):
            fn(bob, jid)
    assert env.jobs.list(bob, include_ended=True) == []
    assert env.jobs.cancel(env.who, jid)["state"] == "cancelled"
    assert env.ctx.store.get_job(jid).state == "cancelled"


def test_rerun_of_an_array_task_keeps_its_index_and_array(env):
    ids = env.jobs.submit(env.who, "p", ["true"], array="0-1%1")["ids"]
    again = env.jobs.rerun(env.who, ids[1])
    j, orig = env.ctx.store.get_job(again["id"]), env.ctx.store.get_job(ids[1])
    assert (j.array_index, j.array_id, j.array_throttle) == (1, orig.array_id, 1) and j.rerun_of == ids[1]
    assert again["array_id"] == orig.array_id
    for i in (*ids, again["id"]):
        env.jobs.cancel(env.who, i)
    # a plain job's rerun stays a plain job
    plain = env.jobs.submit(env.who, "p", ["true"])["id"]
    j = env.ctx.store.get_job(env.jobs.rerun(env.who, plain)["id"])
    assert j.array_index is None and j.array_id is None


def test_rerun_task_runs_with_its_array_task_id(env):
    ids = env.jobs.submit(env.who, "p", ["true"], array="3-4")["ids"]
    for i in ids:
        env.jobs.cancel(env.who, i)
    again = env.jobs.rerun(env.who, ids[1])["id"]
    env.jobs.tick()
    spec = env.engine.c[env.ctx.store.get_job(again).docker_id]["spec"]
    assert spec.env["DS01_ARRAY_TASK_ID"] == "4" and spec.env["DS01_ARRAY_JOB_ID"] == str(ids[0])


def test_submit_with_a_built_image_id_must_be_the_callers_project_image(env):
    theirs = "sha256:" + "b" * 64
    with pytest.raises(NotFound):  # the fake engine's image has no ds01 labels: not the caller's build
        env.jobs.submit(env.who, "p", ["true"], image_id=theirs)
    mine = "sha256:" + "c" * 64
    labels = {"ds01.managed": "true", "ds01.uid": str(env.who.uid), "ds01.project": "p"}
    env.engine.image_inspect = lambda ref: ImageInfo(id=ref, tags=[], labels=labels, size=1, created=0.0)
    with pytest.raises(NotFound):  # another project's build
        env.jobs.submit(env.who, "q", ["true"], image_id=mine)
    with pytest.raises(NotFound):  # ids only in full
        env.jobs.submit(env.who, "p", ["true"], image_id="sha256:cc")
    assert not env.ctx.store.jobs()
    out = env.jobs.submit(env.who, "p", ["true"], image_id=mine)
    j = env.ctx.store.get_job(out["id"])
    assert j.image_id == mine and out["image_id"] == mine


def test_mail_default_is_on_only_where_the_host_can_mail(env):
    out = env.jobs.submit(env.who, "p", ["true"], mail_default=True)  # no relay: no refusal, no mail
    assert out["mail"] is False and env.ctx.store.get_job(out["id"]).mail is False
    cfg = env.ctx.config
    env.ctx.config = cfg.model_copy(update={"notify": cfg.notify.model_copy(update={"smtp": SimpleNamespace()})})
    out = env.jobs.submit(env.who, "p", ["true"], mail_default=True)
    assert out["mail"] is True and env.ctx.store.get_job(out["id"]).mail is True


def test_board_and_counts_show_jobs_without_commands(env):
    ids = env.jobs.submit(env.who, "p", ["secret-command", "--token=x"], env=["K=v"], array="0-2%1")["ids"]
    env.jobs.tick()
    board = env.jobs.board()
    assert [j["id"] for j in board["running"]] == ids[:1] and [j["id"] for j in board["queued"]] == ids[1:]
    assert "secret" not in repr(board) and "K" not in {k for j in board["queued"] for k in j}
    assert env.jobs.counts(env.who.uid) == {"jobs_queued": 2, "jobs_running": 1}
    lim = env.gpu.limits(env.who)
    assert lim["usage"]["jobs_queued"] == 2 and lim["left"]["jobs_queued"] == 1
    assert lim["usage"]["jobs_running"] == 1 and lim["left"]["jobs_running"] == 1 and not lim["over"]
