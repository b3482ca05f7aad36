"""Batch jobs (issue 14) through the real daemon and engine, as real users: outcomes, logs,
isolation between users, arrays, dependencies, the fair queue, mail, and a daemon SIGKILL."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from .harness import TEST_IMAGE, USERS, free_port, new_daemon, ok, unique_project, write_as

TERMINAL = {"succeeded", "failed", "timeout", "cancelled", "lost"}


@pytest.fixture(scope="module")
def jd(docker_client):
    d = new_daemon()
    d.config["daemon"]["tick_interval"] = "1s"
    d.config["gpu"] = {"inventory": "simulated", "simulated": {"gpus": [{}]}}  # one whole GPU
    d.config["defaults"] = {"max_runtime": "1h", "max_gpus": 1.0, "max_containers": 10, "max_jobs_running": 4,
                            "max_jobs_queued": 20}
    d.config["jobs"] = {"kill_grace": 3}
    d.web_port = free_port()
    d.config["observability"] = {"metrics": {"listen": ""},
                                 "web": {"listen": f"127.0.0.1:{d.web_port}", "show_user_names": True}}
    d.start()
    yield d
    d.destroy(docker_client)


def home(user: str) -> str:
    return pwd.getpwnam(USERS[user]).pw_dir


def make_project(user: str, projects: list, git: bool = False) -> str:
    p = unique_project("job")
    projects.append((user, p))
    ws = os.path.join(home(user), "workspace", p)
    write_as(user, os.path.join(ws, "run.sh"), "echo hello from $DS01_JOB_ID\n")
    if git:
        script = ("git init -q && git -c user.email=a@b -c user.name=a add -A && "
                  "git -c user.email=a@b -c user.name=a commit -qm first")
        subprocess.run(["runuser", "-u", USERS[user], "--", "sh", "-c", f"cd {ws} && {script}"], check=True)
    return p


def submit(d, user: str, *args: str) -> list[int]:
    out = json.loads(ok(d.run(user, "job-submit", "--json", *args)).stdout)
    return out["ids"]


def show(d, user: str, jid: int) -> dict:
    return json.loads(ok(d.run(user, "job-show", str(jid), "--json")).stdout)


def wait_state(d, user: str, jid: int, states=TERMINAL, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    j = {}
    while time.time() < deadline:
        j = show(d, user, jid)
        if j["state"] in states:
            return j
        time.sleep(0.3)
    pytest.fail(f"job {jid} did not reach {states}: {j}\n{d.log_tail()}")


def alerts(p: str, want: tuple[str, ...], user: str = "alice", timeout: float = 5) -> str:
    """The project's .ds01-alerts once it has every text in ``want`` (written just after the
    record changed), or what it has at the deadline."""
    path = os.path.join(home(user), "workspace", p, ".ds01-alerts")
    end = time.time() + timeout
    text = ""
    while time.time() < end:
        text = open(path).read() if os.path.exists(path) else ""
        if all(w in text for w in want):
            break
        time.sleep(0.1)
    return text


def logs(d, user: str, jid: int, *args: str) -> str:
    return ok(d.run(user, "job-logs", str(jid), *args)).stdout


def test_succeeds_fails_and_keeps_record_and_log(jd, docker_client, projects):
    p = make_project("alice", projects, git=True)
    [good] = submit(jd, "alice", p, "--name", "hello", "--env", "GREETING=hi", "--",
                    "sh", "-c", "echo $GREETING 42; id -un; pwd; cat run.sh; echo err >&2")
    [bad] = submit(jd, "alice", p, "--", "sh", "-c", "echo before; exit 3")
    j = wait_state(jd, "alice", good)
    assert j["state"] == "succeeded" and j["exit_code"] == 0, j
    assert j["image_id"].startswith("sha256:") and len(j["git_commit"]) == 40 and j["git_dirty"] is False
    assert j["started_at"] and j["ended_at"] >= j["started_at"] and j["name"] == "hello"
    out = logs(jd, "alice", good)
    assert "hi 42" in out and USERS["alice"] in out and "/workspace" in out and "err" in out
    assert f"hello from {good}" not in out and "hello from $DS01_JOB_ID" in out  # cat, not run
    j = wait_state(jd, "alice", bad)
    assert j["state"] == "failed" and j["exit_code"] == 3 and "exit code 3" in j["reason"]
    assert logs(jd, "alice", bad) == "before\n"
    # the container is gone, the records stay; the job shows in --all, not in the default list
    time.sleep(0.5)
    names = {c.name for c in jd.containers(docker_client)}
    assert not any(n.endswith((f"-J{good}", f"-J{bad}")) for n in names)
    listed = json.loads(ok(jd.run("alice", "job-list", "--all", "--json")).stdout)
    assert {good, bad} <= {r["id"] for r in listed}
    assert json.loads(ok(jd.run("alice", "job-list", "--state", "failed", "--json")).stdout)[0]["id"] == bad
    want = (f"job {good} (hello) succeeded", f"job {bad} ({p}) failed: exit code 3")
    assert all(w in alerts(p, want) for w in want)
    # rerun: same image id and command, a new record
    [again] = [json.loads(ok(jd.run("alice", "job-rerun", str(bad), "--json")).stdout)["id"]]
    j2 = wait_state(jd, "alice", again)
    assert j2["state"] == "failed" and j2["image_id"] == j["image_id"] and j2["command"] == j["command"]
    assert j2["rerun_of"] == bad
    # a changed tracked file is recorded as dirty (untracked files are not)
    write_as("alice", os.path.join(home("alice"), "workspace", p, "run.sh"), "echo changed\n")
    [dirty] = submit(jd, "alice", p, "--", "true")
    assert show(jd, "alice", dirty)["git_dirty"] is True


def test_bad_input_is_refused_without_a_record(jd, projects):
    p = make_project("alice", projects)
    before = json.loads(ok(jd.run("alice", "job-list", "--all", "--json")).stdout)
    cases = [
        (("no-such-project-x", "--", "true"), 4, "no project"),
        ((p,), 3, "no command"),
        ((p, "--array", "5-1", "--", "true"), 3, "empty"),
        ((p, "--array", "0-5000", "--", "true"), 3, "limit"),
        ((p, "--array", "0-3%0", "--", "true"), 3, "at once"),
        ((p, "--time", "2h", "--", "true"), 3, "max runtime"),
        ((p, "--after", "999999", "--", "true"), 4, "no job"),
        ((p, "--env", "NVIDIA_VISIBLE_DEVICES=all", "--", "true"), 3, "set by DS01"),
        ((p, "--gpus", "5", "--", "true"), 3, ""),
    ]
    for args, code, text in cases:
        r = jd.run("alice", "job-submit", *args)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    # another user's job id is as missing as one that does not exist
    [bobs] = submit(jd, "bob", make_project("bob", projects), "--", "true")
    r = jd.run("alice", "job-submit", p, "--after", str(bobs), "--", "true")
    assert r.returncode == 4 and "no job" in r.stderr
    after = json.loads(ok(jd.run("alice", "job-list", "--all", "--json")).stdout)
    assert after == before or [j["id"] for j in after] == [j["id"] for j in before]


def test_timeout_sends_sigterm_then_state_timeout(jd, projects):
    p = make_project("alice", projects)
    script = "trap 'echo got TERM; exit 143' TERM; echo started; sleep 60 & wait"
    [jid] = submit(jd, "alice", p, "--time", "2s", "--", "sh", "-c", script)
    t0 = time.time()
    followed = logs(jd, "alice", jid, "-f")  # returns when the job has ended, with all of it
    assert "started" in followed and "got TERM" in followed and time.time() - t0 >= 1.5
    assert logs(jd, "alice", jid, "--tail", "1") == "got TERM\n"
    j = wait_state(jd, "alice", jid, timeout=20)
    assert j["state"] == "timeout" and "time limit" in j["reason"], j
    out = logs(jd, "alice", jid)
    assert "started" in out and "got TERM" in out


def test_cancel_queued_and_running_and_other_users_cannot_touch(jd, docker_client, projects):
    p = make_project("alice", projects)
    [running] = submit(jd, "alice", p, "--", "sh", "-c", "echo up; sleep 60")
    wait_state(jd, "alice", running, {"running"})
    [queued] = submit(jd, "alice", p, "--after", str(running), "--", "true")
    assert show(jd, "alice", queued)["state"] == "queued"
    # bob sees nothing of alice's jobs
    for cmd in (("job-show", str(running)), ("job-logs", str(running)), ("job-cancel", str(running))):
        r = jd.run("bob", *cmd)
        assert r.returncode == 4 and "no job" in r.stderr, (cmd, r.stderr)
    assert running not in {j["id"] for j in json.loads(ok(jd.run("bob", "job-list", "--all", "--json")).stdout)}
    r = jd.run("bob", "job-list", "--all-users")
    assert r.returncode == 5
    assert running in {j["id"] for j in json.loads(ok(jd.run("adm", "job-list", "--all-users", "--json")).stdout)}
    ok(jd.run("alice", "job-cancel", str(queued), str(running)))
    assert show(jd, "alice", queued)["state"] == "cancelled"
    j = wait_state(jd, "alice", running, timeout=20)
    assert j["state"] == "cancelled", j
    assert "up" in logs(jd, "alice", running)
    r = jd.run("alice", "job-cancel", str(running))
    assert r.returncode == 7 and "already ended" in r.stderr


def test_array_throttle_and_after_ordering(jd, projects):
    p = make_project("alice", projects)
    ws = os.path.join(home("alice"), "workspace", p)
    # /proc/uptime: one clock for every container, to 1/100 s
    script = ("read up _ < /proc/uptime; echo start $DS01_ARRAY_TASK_ID $up >> /workspace/trace; sleep 1.5; "
              "read up _ < /proc/uptime; echo end $DS01_ARRAY_TASK_ID $up >> /workspace/trace")
    ids = submit(jd, "alice", p, "--array", "0-5%2", "--", "sh", "-c", script)
    assert len(ids) == 6
    [dep] = submit(jd, "alice", p, "--after", ",".join(map(str, ids)), "--", "sh", "-c",
                   "read up _ < /proc/uptime; echo after $up >> /workspace/trace")
    most = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = json.loads(ok(jd.run("alice", "job-list", "--json")).stdout)
        mine = [r for r in rows if r["id"] in ids]
        most = max(most, sum(r["state"] in ("starting", "running") for r in mine))
        if not mine:
            break
        time.sleep(0.2)
    assert most <= 2
    for jid in ids:
        assert show(jd, "alice", jid)["state"] == "succeeded"
    assert wait_state(jd, "alice", dep)["state"] == "succeeded"
    events = [line.split() for line in open(os.path.join(ws, "trace")).read().splitlines()]
    assert sorted(int(e[1]) for e in events if e[0] == "start") == list(range(6))
    # never three running at once (from the jobs' own clocks), and 'after' after every end
    points = sorted((float(e[-1]), +1 if e[0] == "start" else -1) for e in events if e[0] in ("start", "end"))
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    assert peak <= 2
    last_end = max(float(e[2]) for e in events if e[0] == "end")
    assert float([e for e in events if e[0] == "after"][0][1]) >= last_end
    # a failed dependency fails the dependent with that reason
    [bad] = submit(jd, "alice", p, "--", "false")
    [child] = submit(jd, "alice", p, "--after", str(bad), "--", "true")
    j = wait_state(jd, "alice", child)
    assert j["state"] == "failed" and f"job {bad} failed" in j["reason"]


def test_gpu_job_waits_behind_an_interactive_holder(jd, projects):
    holder = make_project("bob", projects)
    ok(jd.run("bob", "container-deploy", holder, "--gpus", "1", "--background"))
    p = make_project("alice", projects)
    [jid] = submit(jd, "alice", p, "--gpus", "1", "--", "sh", "-c", "echo gpu=$NVIDIA_VISIBLE_DEVICES")
    time.sleep(2.5)
    assert show(jd, "alice", jid)["state"] == "queued"
    q = json.loads(ok(jd.run("alice", "gpu-queue", "--json")).stdout)
    assert any(f"job {jid}" in e["project"] for e in q), q
    t0 = time.time()
    ok(jd.run("bob", "container-retire", holder))
    j = wait_state(jd, "alice", jid, {"running", *TERMINAL}, timeout=10)
    assert time.time() - t0 < 2.5, "a queued job starts within one tick of its GPU freeing"
    # on the daemon's own clock: from the holder's removal (its GPU released) to the job's start,
    # at most one tick (1 s here; a release wakes the loop at once) plus slack
    removed = [e for e in json.loads(ok(jd.run("bob", "ds01", "events", "--type", "container.remove",
                                              "--json")).stdout) if e.get("target") == holder]
    assert removed and j["started_at"] is not None
    assert j["started_at"] - removed[0]["time"] <= 1.0 + 0.5, (j["started_at"], removed[0]["time"])
    j = wait_state(jd, "alice", jid)
    assert j["state"] == "succeeded" and len(j["gpus"]) == 1
    assert f"gpu={j['gpus'][0]}" in logs(jd, "alice", jid)
    assert "started after waiting" in alerts(p, ("started after waiting",))


def test_mail_when_a_job_ends(docker_client, projects):
    from aiosmtpd.controller import Controller

    got = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    d = new_daemon()
    d.config["daemon"]["tick_interval"] = "1s"
    d.config["notify"] = {"smtp": {"host": "127.0.0.1", "port": port,
                                   "address": "{user}@lab.example"}}
    try:
        d.start()
        p = make_project("alice", projects)
        [jid] = submit(d, "alice", p, "--mail", "--", "sh", "-c", "exit 3")
        wait_state(d, "alice", jid)
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            time.sleep(0.2)
        assert got, "no mail arrived"
        rcpt, text = got[0]
        assert rcpt == [f"{USERS['alice']}@lab.example"] and f"job {jid}" in text and "failed" in text
        # the user's default (~/.config/ds01/config.yaml: mail_on_job_end), and --no-mail over it
        xdg = os.path.join(home("alice"), "workspace", p, "xdg")
        write_as("alice", os.path.join(xdg, "ds01", "config.yaml"), "mail_on_job_end: true\n")
        run = [json.loads(ok(d.run("alice", "job-submit", "--json", p, *flag, "--", "true",
                                   env={"XDG_CONFIG_HOME": xdg})).stdout)["id"] for flag in ((), ("--no-mail",))]
        mailed, quiet = run
        for j in run:
            wait_state(d, "alice", j)
        deadline = time.time() + 10
        while len(got) < 2 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # (a wrong mail for 'quiet' would come right after)
        texts = [t for _, t in got[1:]]
        assert any(re.search(rf"job {mailed}\b", t) for t in texts), texts
        assert not any(re.search(rf"job {quiet}\b", t) for t in texts), texts
        assert show(d, "alice", mailed)["mail"] is True and show(d, "alice", quiet)["mail"] is False
    finally:
        ctl.stop()
        d.destroy(docker_client)


def test_sigkill_of_the_daemon_mid_job(jd, projects):
    p = make_project("alice", projects)
    script = "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done; exit 0"
    [jid] = submit(jd, "alice", p, "--", "sh", "-c", script)
    wait_state(jd, "alice", jid, {"running"})
    time.sleep(0.7)
    jd.stop(signal.SIGKILL)
    time.sleep(2)
    jd.start()
    j = wait_state(jd, "alice", jid, timeout=30)
    assert j["state"] == "succeeded", j
    assert logs(jd, "alice", jid) == "".join(f"line {i}\n" for i in range(1, 7))


def test_submit_builds_a_changed_project_first_and_runs_that_build(jd, docker_client, projects):
    p = make_project("alice", projects)
    ws = os.path.join(home("alice"), "workspace", p)
    image = f"ds01/{USERS['alice']}/{p}:latest"
    try:
        write_as("alice", os.path.join(ws, "Dockerfile"), f"FROM {TEST_IMAGE}\nRUN echo one > /built\n")
        r = ok(jd.run("alice", "job-submit", p, "--", "cat", "/built", timeout=300))
        first = int(r.stdout.strip())  # stdout is the job id alone: the build's output went to stderr
        assert "building the image" in r.stderr, r.stderr
        built = docker_client.images.get(image).id
        j = wait_state(jd, "alice", first)
        assert j["state"] == "succeeded" and j["image_id"] == built and logs(jd, "alice", first) == "one\n"
        # nothing changed: no build, the same image
        r = ok(jd.run("alice", "job-submit", p, "--", "cat", "/built"))
        assert "build" not in r.stderr and show(jd, "alice", int(r.stdout))["image_id"] == built
        # changed: built again first; the job runs the new build
        write_as("alice", os.path.join(ws, "Dockerfile"), f"FROM {TEST_IMAGE}\nRUN echo two > /built\n")
        [second] = submit(jd, "alice", p, "--", "cat", "/built")
        rebuilt = docker_client.images.get(image).id
        j = wait_state(jd, "alice", second)
        assert rebuilt != built and j["image_id"] == rebuilt and logs(jd, "alice", second) == "two\n"
        # a failed build: exit 11, the failing step on stderr, and no job
        before = [x["id"] for x in json.loads(ok(jd.run("alice", "job-list", "--all", "--json")).stdout)]
        write_as("alice", os.path.join(ws, "Dockerfile"), f"FROM {TEST_IMAGE}\nRUN echo broken; exit 7\n")
        r = jd.run("alice", "job-submit", p, "--", "true", timeout=300)
        assert r.returncode == 11 and "broken" in r.stderr and not r.stdout.strip(), (r.stdout, r.stderr)
        after = [x["id"] for x in json.loads(ok(jd.run("alice", "job-list", "--all", "--json")).stdout)]
        assert after == before
    finally:
        jd.run("alice", "image-delete", p, "--force", "--yes")


def test_rerun_of_an_array_task_keeps_its_task_id(jd, projects):
    p = make_project("alice", projects)
    ids = submit(jd, "alice", p, "--array", "5-6", "--", "sh", "-c", "echo task=$DS01_ARRAY_TASK_ID")
    for jid in ids:
        wait_state(jd, "alice", jid)
    again = json.loads(ok(jd.run("alice", "job-rerun", str(ids[1]), "--json")).stdout)["id"]
    j = wait_state(jd, "alice", again)
    assert j["state"] == "succeeded" and j["array_index"] == 6 and j["array_id"] == ids[0]
    assert logs(jd, "alice", again) == "task=6\n"


def test_status_web_page_and_check_limits_show_jobs(jd, projects):
    p = make_project("alice", projects)
    [running] = submit(jd, "alice", p, "--name", "shown", "--", "sh", "-c", "echo secret-arg; sleep 60")
    wait_state(jd, "alice", running, {"running"})
    [queued] = submit(jd, "alice", p, "--after", str(running), "--", "true")
    try:
        st = json.loads(ok(jd.run("bob", "ds01", "status", "--json")).stdout)  # everyone sees the board
        assert running in [j["id"] for j in st["jobs"]["running"]]
        assert queued in [j["id"] for j in st["jobs"]["queued"]]
        assert "secret-arg" not in json.dumps(st["jobs"])  # never the command
        text = ok(jd.run("alice", "ds01", "status")).stdout
        assert "Batch jobs" in text and "shown" in text and re.search(r"jobs: [1-9]\d* running, [1-9]\d* queued", text)
        lim = json.loads(ok(jd.run("alice", "check-limits", "--json")).stdout)
        assert lim["usage"]["jobs_running"] >= 1 and lim["usage"]["jobs_queued"] >= 1
        assert lim["left"]["jobs_queued"] == lim["limits"]["max_jobs_queued"] - lim["usage"]["jobs_queued"]
        text = ok(jd.run("alice", "check-limits")).stdout
        row = [line for line in text.splitlines() if line.startswith("batch jobs running")]
        assert row and "4" in row[0]  # max_jobs_running of this daemon
        req = urllib.request.Request(f"http://127.0.0.1:{jd.web_port}/",
                                     headers={"Host": f"127.0.0.1:{jd.web_port}"})
        page = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10).read().decode()
        assert 'id="jobs"' in page and f"<td>{running}</td>" in page and f"<td>{queued}</td>" in page
        assert "secret-arg" not in page
    finally:
        ok(jd.run("alice", "job-cancel", str(queued), str(running)))
