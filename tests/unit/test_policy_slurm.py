"""policy.slurm: Slurm 22.05 text formats (real outputs from the two-node test cluster under
tests/fixtures/slurm/), sbatch arguments, and the policy -> Slurm mapping."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.models.config import Config, GroupLimits, Limits, QueueConfig
from ds01.models.gpu import GpuRequest
from ds01.policy import slurm as S
from ds01.policy.slurm import (
    Setting,
    SlurmJob,
    gres_for,
    job_name,
    parse_config,
    parse_duration,
    parse_indices,
    parse_job,
    parse_job_name,
    parse_jobs,
    parse_nodes,
    parse_submit,
    qos_limits,
    settings_diff,
    slurm_duration,
    slurm_time,
    submit_args,
    unmapped,
    wanted_settings,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def local(ts: str) -> float:
    return time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%S"))


# -- jobs: real scontrol output -----------------------------------------------------------------


def test_running_job_from_the_test_cluster():
    j = parse_job(fixture("scontrol_job_running.txt"))
    assert j == SlurmJob(id=1, name="ds01-x", user_id=1001, state="RUNNING", reason=None, node="ds01n1",
                         gres_type="h200", gpu_indices=(0,), start_time=local("2026-12-01T11:04:11"),
                         time_limit_s=365 * 86400, partition="ds01")
    assert j.live and j.running


def test_indices_are_the_ones_slurm_gave_the_job():
    # job_env.txt: what the jobs themselves saw (CUDA_VISIBLE_DEVICES) is what -d reports
    assert parse_job(fixture("scontrol_job_running_idx1.txt")).gpu_indices == (1,)
    two = parse_job(fixture("scontrol_job_running_gpu2.txt"))
    assert (two.id, two.node, two.gpu_indices, two.time_limit_s) == (7, "ds01n2", (0, 1), None)
    env = fixture("job_env.txt")
    assert "SLURM_JOB_ID=4\nGPU_DEVICE_ORDINAL=1" in env and "SLURM_JOB_GPUS=0,1" in env


def test_pending_jobs_have_a_reason_an_estimate_and_no_node():
    p = parse_job(fixture("scontrol_job_pending.txt"))
    assert (p.state, p.reason, p.node, p.gpu_indices, p.gres_type) == ("PENDING", "Resources", None, (), None)
    assert p.start_time == local("2027-12-01T11:04:27") and p.live and not p.running
    assert parse_job(fixture("scontrol_job_pending_gpu2.txt")).reason == "Priority"


@pytest.mark.parametrize("name,state", [("scontrol_job_cancelled.txt", "CANCELLED"),
                                        ("scontrol_job_completed.txt", "COMPLETED")])
def test_ended_jobs_hold_nothing(name, state):
    j = parse_job(fixture(name))
    assert j.state == state and not j.live and not j.running and j.gpu_indices == ()


def test_multiline_format_reads_like_the_one_line_format():
    assert parse_jobs(fixture("scontrol_job_running_multiline.txt")) == [parse_job(fixture("scontrol_job_running.txt"))]
    assert parse_job(fixture("scontrol_job_running_multiline.txt")) == parse_job(fixture("scontrol_job_running.txt"))


def test_parse_jobs_over_several_records():
    text = "\n\n".join(fixture(n) for n in ("scontrol_job_running.txt", "scontrol_job_pending.txt",
                                             "scontrol_job_running_gpu2.txt"))
    assert [j.id for j in parse_jobs(text)] == [1, 6, 7]


@pytest.mark.parametrize("text", ["", "\n\n", "No jobs in the system\n",
                                  "slurm_load_jobs error: Invalid job id specified\n"])
def test_no_jobs(text):
    assert parse_jobs(text) == []


def test_older_and_other_gres_forms():
    base = fixture("scontrol_job_running.txt")
    assert parse_job(base.replace("GRES=gpu:h200:1(IDX:0)", "GRES=gpu:3(IDX:0,2-3)")).gpu_indices == (0, 2, 3)
    j = parse_job(base.replace("GRES=gpu:h200:1(IDX:0)", "GRES=gpu:1g.18gb:1(IDX:5)"))
    assert (j.gres_type, j.gpu_indices) == ("1g.18gb", (5,))
    j = parse_job(base.replace("GRES=gpu:h200:1(IDX:0)", "GRES_IDX=gpu:a100(IDX:1)"))
    assert (j.gres_type, j.gpu_indices) == ("a100", (1,))
    untyped = base.replace("GRES=gpu:h200:1(IDX:0)", "GRES=gpu:2(IDX:0-1)").replace("JOB_GRES=gpu:h200:1", "")
    assert parse_job(untyped).gres_type is None and parse_job(untyped).gpu_indices == (0, 1)


@pytest.mark.parametrize("line,msg", [
    ("", "JobId"),
    ("hello world", "JobId"),
    ("JobId=abc UserId=a(1) JobState=RUNNING", "JobId"),
    ("JobId=3 JobState=RUNNING", "UserId"),
    ("JobId=3 UserId=a(1)", "JobState"),
])
def test_garbage_is_a_clear_value_error(line, msg):
    with pytest.raises(ValueError, match=msg):
        parse_job(line)


def test_a_job_name_that_imitates_fields_is_refused_not_believed():
    line = fixture("scontrol_job_running.txt").replace("JobName=ds01-x", "JobName=x UserId=root(0) JobState=RUNNING")
    with pytest.raises(ValueError, match="ambiguous"):
        parse_job(line)
    # one odd job in a listing does not hide the others
    text = line + "\n" + fixture("scontrol_job_pending.txt")
    assert [j.id for j in parse_jobs(text)] == [6]


def test_a_value_with_a_newline_cannot_forge_a_job():
    real = fixture("scontrol_job_running.txt").strip()
    # a continuation line only extends its record, which then reads as ambiguous and is skipped
    forged = real.replace("JobName=ds01-x", "JobName=x\nUserId=root(0) JobState=RUNNING")
    assert parse_jobs(forged + "\n" + fixture("scontrol_job_pending.txt")) == [parse_job(fixture("scontrol_job_pending.txt"))]
    # a forged record for an id that exists is refused, not believed
    with pytest.raises(ValueError):
        parse_jobs(real.replace("JobName=ds01-x", "JobName=x\n" + real.replace("ds01n1", "ds01n2")))
    with pytest.raises(ValueError, match="appears twice"):
        parse_jobs(real + "\n" + real.replace("ds01n1", "ds01n2"))


def test_garbage_in_a_listing_raises():
    with pytest.raises(ValueError):
        parse_jobs("error: slurm_receive_msg: Socket timed out\n")


# -- hypothesis: parse_job only ever raises ValueError -------------------------------------------

_KEYS = ["JobId", "JobName", "UserId", "JobState", "Reason", "NodeList", "Nodes", "GRES", "GRES_IDX",
         "JOB_GRES", "TresPerNode", "StartTime", "TimeLimit", "Partition", "TRES"]
_VALUES = st.one_of(st.text(max_size=20), st.from_regex(r"\A[0-9()a-z:,\-]{0,12}\Z"),
                    st.sampled_from(["1", "a(1)", "RUNNING", "(null)", "gpu:h200:2(IDX:0-1)", "gpu(IDX:x)",
                                     "UNLIMITED", "1-00:00:00", "9999-99-99T99:99:99", "2026-12-01T11:04:11",
                                     "gpu:x:1(IDX:5-2)", "gpu:1(IDX:0-999999)", "None"]))
_RECORDS = st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), max_size=12).map(
    lambda kv: " ".join(f"{k}={v}" for k, v in kv))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), _RECORDS))
def test_parse_job_raises_only_value_error(text):
    try:
        j = parse_job(text)
    except ValueError:
        return
    assert isinstance(j.id, int) and isinstance(j.user_id, int) and all(isinstance(i, int) for i in j.gpu_indices)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), _RECORDS.map(lambda r: r + "\n" + r)))
def test_parse_jobs_and_nodes_raise_only_value_error(text):
    for f in (parse_jobs, parse_nodes, parse_config):
        try:
            f(text)
        except ValueError:
            pass


# -- indices ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,want", [("0", (0,)), ("0-1", (0, 1)), ("0-1,3", (0, 1, 3)), ("0,2-3", (0, 2, 3)),
                                       ("3,0", (0, 3)), (" 1 ", (1,)), ("1,1", (1,))])
def test_parse_indices(text, want):
    assert parse_indices(text) == want


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "N/A", "0-99999"])
def test_parse_indices_refuses(text):
    with pytest.raises(ValueError):
        parse_indices(text)


def ranges(ints: set[int]) -> str:
    """Render a set as Slurm does: runs of consecutive ints as a-b."""
    out, xs = [], sorted(ints)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ",".join(out)


@given(st.sets(st.integers(0, 300), min_size=1))
def test_parse_indices_round_trips_ranges(ints):
    assert parse_indices(ranges(ints)) == tuple(sorted(ints))


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("secs,want", [(None, "UNLIMITED"), (0, "UNLIMITED"), (-5, "UNLIMITED"),
                                       (float("inf"), "UNLIMITED"), (1, "0-00:01:00"), (60, "0-00:01:00"),
                                       (61, "0-00:02:00"), (48 * 3600, "2-00:00:00"),
                                       (86400 + 2 * 3600 + 3 * 60 + 4, "1-02:04:00")])
def test_slurm_time(secs, want):
    assert slurm_time(secs) == want


def inverse(t: str) -> int:
    d, hms = t.split("-")
    h, m, s = map(int, hms.split(":"))
    return int(d) * 86400 + h * 3600 + m * 60 + s


@given(st.floats(min_value=1e-6, max_value=400 * 86400, allow_nan=False))
def test_slurm_time_rounds_up_to_the_minute(secs):
    t = slurm_time(secs)
    assert re.fullmatch(r"\d+-\d\d:\d\d:00", t)
    assert secs <= inverse(t) < secs + 60
    assert parse_duration(t) == inverse(t)


@pytest.mark.parametrize("text,want", [("UNLIMITED", None), ("Partition_Limit", None), ("NONE", None),
                                       ("1-02:03:04", 93784), ("02:03:04", 7384), ("30:00", 1800), ("5", 300),
                                       ("2-12", 216000), ("2-12:30", 217800), ("365-00:00:00", 365 * 86400)])
def test_parse_duration(text, want):
    assert parse_duration(text) == want


@pytest.mark.parametrize("secs,want", [(7 * 86400, "7-00:00:00"), (3600, "01:00:00"), (90061, "1-01:01:01"),
                                       (0.2, "00:00:01")])
def test_slurm_duration_is_scontrol_show_config_format(secs, want):
    assert slurm_duration(secs) == want


# -- names --------------------------------------------------------------------------------------


def test_job_name_round_trip():
    assert job_name("default", 1001, "proj") == "ds01-default-u1001-proj"
    assert parse_job_name("ds01-default-u1001-proj") == ("default", 1001, "proj")
    assert parse_job_name("ds01-lab-a-u7-my-proj.v2") == ("lab-a", 7, "my-proj.v2")
    for other in ("ds01-x", "wrap", "ds01-default-ux-p", "ds01--u1-p", "xds01-default-u1-p", "ds01-d-u1-"):
        assert parse_job_name(other) is None


_INSTANCE = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,31}\Z")
_PROJECT = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")


@given(_INSTANCE, st.integers(0, 2**31), _PROJECT)
def test_job_name_is_invertible_or_refused(instance, uid, project):
    try:
        name = job_name(instance, uid, project)
    except ValueError:
        return  # e.g. instance "a-u1-b": the split would be ambiguous
    assert parse_job_name(name) == (instance, uid, project)


# -- gres ---------------------------------------------------------------------------------------

MIG = {"1g.18gb": "1g.18gb", "3g.71gb": "mig3g"}


@pytest.mark.parametrize("req,gtype,want", [
    (GpuRequest(), None, None),
    (GpuRequest(gpus=0), "h200", None),
    (GpuRequest(gpus=1), None, "gpu:1"),
    (GpuRequest(gpus=2), "h200", "gpu:h200:2"),
    (GpuRequest(profile="1g.18gb"), "h200", "gpu:1g.18gb:1"),
    (GpuRequest(profile="3g.71gb"), None, "gpu:mig3g:1"),
])
def test_gres_for(req, gtype, want):
    assert gres_for(req, gtype, MIG) == want


@pytest.mark.parametrize("req,msg", [
    (GpuRequest(mig=2), "name a profile in cluster mode"),
    (GpuRequest(profile="2g.35gb"), "2g.35gb"),
    (GpuRequest(gpus=1, profile="1g.18gb"), "conflicting"),
    (GpuRequest(gpus=-1), "whole number"),
    (GpuRequest(gpus=1.5), "whole number"),
    (GpuRequest(gpus=True), "whole number"),
])
def test_gres_for_refuses(req, msg):
    with pytest.raises(ValueError, match=msg):
        gres_for(req, "h200", MIG)


def test_gres_type_must_be_a_name():
    with pytest.raises(ValueError):
        gres_for(GpuRequest(gpus=1), "h200,gpu:evil:9", MIG)


# -- sbatch -------------------------------------------------------------------------------------

BASE = dict(partition="ds01", name="ds01-default-u1001-p", uid=1001, gid=1001, gres="gpu:h200:1", cpus=3.5,
            memory_bytes=16 * 1024**3 + 1, time_limit_s=48 * 3600, workdir="/home/alice/workspace/p")


def test_submit_args_exact():
    assert submit_args(**BASE, nodelist="ds01n2") == [
        "--parsable", "--uid=1001", "--gid=1001", "--partition=ds01", "--job-name=ds01-default-u1001-p",
        "--chdir=/home/alice/workspace/p", "--output=/dev/null", "--error=/dev/null", "--no-requeue", "--gres=gpu:h200:1",
        "--cpus-per-task=4", "--mem=16385M", "--time=2-00:00:00", "--nodelist=ds01n2", "--wrap=sleep infinity"]


def test_submit_args_without_optional_values():
    args = submit_args(**{**BASE, "gres": None, "cpus": None, "memory_bytes": None, "time_limit_s": 0})
    assert not any(a.startswith(("--gres", "--cpus", "--mem", "--nodelist")) for a in args)
    assert "--time=UNLIMITED" in args and args[-1] == "--wrap=sleep infinity"


@pytest.mark.parametrize("key,bad", [("name", "a b"), ("name", "x=y"), ("name", ""), ("name", "a\nb"),
                                     ("partition", "ds01 --uid=0"), ("workdir", "relative"),
                                     ("workdir", "/a b"), ("uid", -1), ("uid", True), ("gres", "gpu:1,mem:2"),
                                     ("nodelist", "n1 n2"), ("command", "a\nb")])
def test_submit_args_refuses(key, bad):
    with pytest.raises(ValueError):
        submit_args(**{**BASE, key: bad})


_NAME = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.+ =,:;'\"$`\\/\n"), min_size=1, max_size=40)
_SUBMIT = dict(name=_NAME, workdir=st.text(min_size=1, max_size=30).map(lambda s: "/" + s), partition=_NAME,
               uid=st.integers(0, 2**31), cpus=st.one_of(st.none(), st.floats(0.01, 64)),
               memory_bytes=st.one_of(st.none(), st.integers(1, 2**40)),
               time_limit_s=st.one_of(st.none(), st.floats(0, 1e7)), nodelist=st.one_of(st.none(), _NAME))
_ELEMENT = {"name": "--job-name", "workdir": "--chdir", "partition": "--partition", "uid": "--uid",
            "cpus": "--cpus-per-task", "memory_bytes": "--mem", "time_limit_s": "--time", "nodelist": "--nodelist"}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries(_SUBMIT), st.sampled_from(sorted(_ELEMENT)), st.data())
def test_submit_args_keeps_each_value_in_its_own_element(kw, field, data):
    kw = {**kw, "gid": 5, "gres": None}
    try:
        args = submit_args(**kw)
    except ValueError:
        return
    keys = [a.split("=", 1)[0] for a in args]
    assert all(a.startswith("--") for a in args) and len(set(keys)) == len(keys)
    assert keys[0] == "--parsable" and keys[-1] == "--wrap" and f"--job-name={kw['name']}" in args
    # changing one value changes its own element and nothing else
    other = data.draw(_SUBMIT[field], label="other")
    try:
        args2 = submit_args(**{**kw, field: other})
    except ValueError:
        return
    changed = {a.split("=", 1)[0] for a in set(args) ^ set(args2)}
    assert changed <= {_ELEMENT[field]}, (field, changed)
    # and a name that went through cannot break scontrol's Key=Value text later
    assert not re.search(r"[\s=]", kw["name"])


@pytest.mark.parametrize("out,want", [("1", 1), ("123\n", 123), ("123;cluster\n", 123),
                                      ("sbatch: warning: x\n77\n", 77)])
def test_parse_submit(out, want):
    assert parse_submit(out) == want
    if out == "1":
        assert parse_submit(fixture("sbatch_parsable.txt")) == 1


@pytest.mark.parametrize("out", ["", "sbatch: error: Batch job submission failed", ";x"])
def test_parse_submit_refuses(out):
    with pytest.raises(ValueError):
        parse_submit(out)


# -- nodes --------------------------------------------------------------------------------------


def test_nodes_from_the_test_cluster():
    nodes = parse_nodes(fixture("scontrol_show_node.txt"))
    assert [(n.name, n.state, n.addr, n.gres, n.reason, n.usable) for n in nodes] == [
        ("ds01n1", "MIXED", "10.77.0.11", {"h200": 2}, None, True),
        ("ds01n2", "MIXED", "10.77.0.12", {"h200": 2}, None, True)]


def test_drained_node_with_reason():
    line = fixture("scontrol_show_node.txt").splitlines()[0].replace(
        "State=MIXED", "State=IDLE+DRAIN") + " Reason=ds01 agent not answering [root@2026-12-01T11:20:00]"
    (n,) = parse_nodes(line)
    assert (n.state, n.reason, n.usable) == ("IDLE+DRAIN", "ds01 agent not answering", False)


@pytest.mark.parametrize("state,usable", [("IDLE", True), ("MIXED", True), ("ALLOCATED", True),
                                          ("IDLE+COMPLETING", True), ("IDLE+DRAIN", False), ("MIXED+DRAIN", False),
                                          ("DOWN*", False), ("IDLE*", False), ("DOWN+NOT_RESPONDING", False),
                                          ("DRAINED", False), ("FAIL", False), ("IDLE+POWERED_DOWN", True)])
def test_node_usable(state, usable):
    assert S.SlurmNode("n", state, None, {}, None).usable is usable


def test_node_gres_forms():
    line = "NodeName=n1 Gres=gpu:h200:2(S:0-1),gpu:1g.18gb:3,gpu:1,shard:8 State=IDLE NodeAddr=n1"
    assert parse_nodes(line)[0].gres == {"h200": 2, "1g.18gb": 3, "": 1}
    assert parse_nodes("NodeName=n1 Gres=(null) State=IDLE")[0].gres == {}


# -- config and the policy mapping --------------------------------------------------------------

CONFIG_TEXT = """Configuration data as of 2026-12-01T11:10:00
AccountingStorageType   = accounting_storage/none
PriorityDecayHalfLife   = 7-00:00:00
PriorityMaxAge          = 7-00:00:00
PriorityType            = priority/basic
PriorityWeightAge       = 0
PriorityWeightFairShare = 10000
SlurmctldPort           = 6817

Cgroup Support Configuration:
PriorityType            = should-not-win
"""


def test_parse_config():
    c = parse_config(CONFIG_TEXT)
    assert c["PriorityDecayHalfLife"] == "7-00:00:00" and c["PriorityType"] == "priority/basic"
    assert c["SlurmctldPort"] == "6817" and "Configuration" not in c


def test_wanted_settings_default_and_custom():
    w = {s.key: s for s in wanted_settings(Config())}
    assert w["PriorityType"].value == "priority/multifactor"
    assert (w["PriorityDecayHalfLife"].value, w["PriorityDecayHalfLife"].source) == ("7-00:00:00", "queue.half_life")
    assert int(w["PriorityWeightFairshare"].value) > 0 and int(w["PriorityWeightAge"].value) > 0
    assert w["PriorityMaxAge"].value == "7-00:00:00" and w["PriorityMaxAge"].source == "queue.aging"
    w = {s.key: s.value for s in wanted_settings(Config(queue=QueueConfig(half_life=36 * 3600, aging=600)))}
    assert w["PriorityDecayHalfLife"] == "1-12:00:00" and w["PriorityMaxAge"] == "1-04:00:00"


def test_settings_diff_is_exact_against_scontrol_format():
    current = parse_config(CONFIG_TEXT)
    diff = settings_diff(current, wanted_settings(Config()))
    # PriorityWeightFairShare (scontrol's spelling) already matches slurm.conf's PriorityWeightFairshare
    assert [d[0] for d in diff] == ["PriorityType", "PriorityWeightAge"]
    assert diff[0] == ("PriorityType", "priority/basic", "priority/multifactor", "queue")
    assert diff[1] == ("PriorityWeightAge", "0", "10000", "queue.aging")
    assert settings_diff({}, wanted_settings(Config()))[1][1] is None  # not in the current config at all
    applied = {**current, **{k: w for k, _c, w, _s in diff}}
    assert settings_diff(applied, wanted_settings(Config())) == []
    assert settings_diff({}, [Setting("A", "1", "x")]) == [("A", None, "1", "x")]


CFG = Config(groups=[GroupLimits(name="students", unix_group="students",
                                 limits=Limits(max_gpus=1.5, max_runtime=0, max_containers=1))],
             users={"alice": Limits(max_gpus=2, priority_weight=2.5, max_jobs_queued=10)})


def test_qos_limits():
    q = qos_limits(CFG, [("alice", set()), ("sam", {"students"}), ("nobody", set())])
    assert q["alice"] == {"MaxTRESPerUser": "gres/gpu=2", "MaxTRESPerJob": "gres/gpu=1", "MaxWall": "2-00:00:00",
                          "MaxJobsPerUser": "7", "MaxSubmitJobsPerUser": "17", "Fairshare": "250"}
    assert q["sam"]["MaxTRESPerUser"] == "gres/gpu=1"  # 1.5 GPU-equivalents: floor for whole GPUs
    assert q["sam"]["MaxWall"] == "-1" and q["sam"]["MaxJobsPerUser"] == "5"
    assert q["nobody"]["Fairshare"] == "100"
    # with MIG, Slurm counts instances: 1.5 equivalents admit ten 1-slice instances
    assert qos_limits(CFG, [("sam", {"students"})], mig=True)["sam"]["MaxTRESPerUser"] == "gres/gpu=10"


def test_unmapped_comes_from_the_limits_model():
    keys = unmapped(Config())
    for k in ("max_gpus_per_container", "max_runtime", "max_gpus", "priority_weight"):
        assert f"limits.{k}" not in keys
    for k in ("allow_full_gpu", "allow_mig", "idle_timeout", "pids", "shm_size", "gpu_hold_after_stop"):
        assert f"limits.{k}" in keys
    assert {f"limits.{k}" for k in Limits.model_fields} <= set(keys) | {f"limits.{k}" for k in S.LIMIT_MAPPING}
    assert set(S.LIMIT_MAPPING) <= set(Limits.model_fields)


def test_policy_table_names_every_limit():
    rows = S.policy_table(Config())
    named = {r[0] for r in rows}
    assert {f"limits.{k}" for k in Limits.model_fields} <= named and "queue.half_life" in named
    assert all(r[1] != "none" or "head" in r[2] or "no meaning" in r[2] for r in rows)
    assert dict((r[0], r[2]) for r in rows)["limits.allow_full_gpu"] == "enforced by the head at submit time"


def test_a_job_requeued_after_its_node_failed_pends_with_no_node():
    j = parse_job(fixture("scontrol_job_requeued_after_node_failure.txt"))
    assert (j.id, j.state, j.reason, j.node, j.gpu_indices) == (7, "PENDING", "BeginTime", None, ())
    assert j.live and not j.running


def test_a_node_that_stopped_answering():
    (n,) = parse_nodes(fixture("scontrol_show_node_down.txt"))
    assert (n.name, n.state, n.reason, n.usable) == ("ds01n2", "DOWN+NOT_RESPONDING", "Not responding", False)
