"""Pure helpers of project-launch / container-retire (ds01.projects.launch)."""

from __future__ import annotations

import pytest

from ds01.images.dockerfile import DockerfileSpec, content_hash
from ds01.projects import launch
from ds01.projects.launch import BuildDecision, Stamp, decide_build, hand_installed, hash_covers_build, host_port

WS = "/home/alice/workspace/thesis"
IMG = {"image": "ds01/alice/thesis:latest", "id": "abc123def456", "content_hash": "sha256:x"}


@pytest.mark.parametrize("df,req", [("FROM a\n", None), ("FROM a\n", b""), ("FROM b\nRUN x\n", b"numpy\n"),
                                     ("", b"\x00\xff")])
def test_client_hash_is_the_generators_content_hash(df, req):
    assert launch.client_hash(df, req) == content_hash(df, req)


def test_client_hash_changes_with_requirements():
    a = launch.client_hash("FROM a\n", b"numpy\n")
    assert a != launch.client_hash("FROM a\n", b"numpy\npandas\n")
    assert a != launch.client_hash("FROM a\n", None)
    assert launch.client_hash("FROM a\n", b"") != launch.client_hash("FROM a\n", None)


def stamp(h="h1", image_id="abc123def456", ws=WS):
    return Stamp(h, image_id, ws)


def test_no_image_builds():
    assert decide_build(None, stamp(), "h1", WS, True).build


def test_unchanged_does_not_build():
    d = decide_build(IMG, stamp(), "h1", WS, True)
    assert d == BuildDecision(False, "nothing changed since the last build")


def test_changed_requirements_build():
    d = decide_build(IMG, stamp(), "h2", WS, True)
    assert d.build and "requirements" in d.reason


@pytest.mark.parametrize("st", [None, stamp(ws="/other"), stamp(image_id="000000000000")])
def test_unknown_or_stale_stamp_asks_the_daemon(st):
    assert decide_build(IMG, st, "h1", WS, True).build


def test_rebuild_flag_and_uncovered_dockerfile_build():
    assert decide_build(IMG, stamp(), "h1", WS, True, rebuild=True).build
    assert decide_build(IMG, stamp(), "h1", WS, False).build


def test_generated_dockerfile_is_covered_by_the_client_hash():
    text = DockerfileSpec(base_image="ds01/base:latest", project="p", requirements_file="requirements.txt",
                          pip_packages=("numpy",)).render()
    assert hash_covers_build(text)
    assert hash_covers_build("FROM a\nCOPY ./requirements.txt /opt/r.txt\n")


@pytest.mark.parametrize("extra", [
    "COPY . /app", "COPY src/ /app/src", "ADD data.tar /d", 'COPY ["requirements.txt", "/x"]',
    "COPY requirements.txt \\\n  setup.py /app/",
])
def test_dockerfile_copying_other_files_is_not_covered(extra):
    assert not hash_covers_build("FROM a\n" + extra + "\n")


def test_copy_from_a_stage_is_covered_and_comments_ignored():
    assert hash_covers_build("FROM a AS b\nFROM c\nCOPY --from=b /x /y\n# COPY . /app\n")


def test_stamp_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert launch.load_stamp("p") is None
    launch.save_stamp("p", stamp())
    assert launch.load_stamp("p") == stamp()
    (tmp_path / "ds01/launch/p.json").write_text("{broken")
    assert launch.load_stamp("p") is None


@pytest.mark.parametrize("rec,port", [
    ({"ports": [{"container": 8888, "host_ip": "127.0.0.1", "host_port": 41234}]}, 41234),
    ({"ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}]}}, 41234),
    ({"ports": {"8888": 41234}}, 41234),
    ({"ports": [[8888, "127.0.0.1", 41234]]}, 41234),
    ({"ports": [{"container": 22, "host_port": 5}]}, None),
    ({"ports": []}, None),
    ({}, None),
])
def test_host_port_shapes(rec, port):
    assert host_port(rec, 8888) == port


def test_hand_installed_finds_new_packages_only():
    pkgs = [
        {"name": "numpy", "version": "2.0.0", "mtime": 100.0},  # from the image
        {"name": "Rich_Text", "version": "1.2", "mtime": 500.0},  # installed by hand
        {"name": "pip", "version": "25.0", "mtime": 500.0},  # upgraded pip: never saved
        {"name": "pandas", "version": "2.2.0", "mtime": 500.0},  # by hand, but already in requirements
        {"name": "broken", "version": "1", "mtime": "x"},
    ]
    found = hand_installed(pkgs, since=200.0, known=["Pandas"])
    assert found.add == ["rich-text==1.2"]
    assert found.listed == ["pandas"]


def test_requirement_names():
    lines = ["# c", "numpy==2.0 # pin", "-r other.txt", "pandas[excel]>=2", "git+https://x/y.git", "", "  scipy"]
    assert launch.requirement_names(lines) == ["numpy", "pandas", "scipy"]


def test_file_signature_tracks_size_and_mtime(tmp_path, monkeypatch):
    import os

    ws = tmp_path / "p"
    ws.mkdir()
    (ws / "Dockerfile").write_text("FROM a\n")
    sig = launch.file_signature(str(ws))
    assert sig["requirements.txt"] is None and sig["Dockerfile"][0] == 7
    (ws / "requirements.txt").write_text("numpy\n")
    assert launch.file_signature(str(ws)) != sig
    sig2 = launch.file_signature(str(ws))
    os.utime(ws / "Dockerfile", ns=(1, 1))  # same size, new mtime: a change as far as we know
    assert launch.file_signature(str(ws)) != sig2
    # the stamp keeps it across a round trip
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    st = launch.Stamp("h", "img", str(ws), launch.file_signature(str(ws)), True)
    launch.save_stamp("p", st)
    assert launch.load_stamp("p") == st
