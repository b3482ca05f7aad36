"""Issue 12 (the environment a user works in), the parts without a daemon: frameworks on every
host (one driver source, CPU entries, "CPU only here", the picker), local files in
requirements, the tools of DS01-made images, the admin's wheelhouse, rebuilt image → replaced
container (stamps and hints), and the small things (admin typos, deploy flags, workspaces)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ds01.errors import DS01Error, InvalidInput, PolicyDenied
from ds01.images.catalog import default_for, fit, load_catalog, select
from ds01.images.dockerfile import REQ_BEGIN, DockerfileSpec, sync_requirements
from ds01.images.requirements import is_local_requirement, requirement_inputs
from ds01.models.config import Config
from ds01.models.gpu import Inventory

CAT = load_catalog()


# --------------------------------------------------------------------------- item 7: frameworks


def test_catalog_believes_the_inventorys_driver():
    """One driver source: the inventory (simulated here, as `ds01 gpus` shows it)."""
    from ds01.services.images import ImageService

    stub = SimpleNamespace(ctx=SimpleNamespace(config=Config(), inventory=Inventory(driver_version="550.54.15")))
    assert ImageService.driver_version(stub) == "550.54.15"  # type: ignore[arg-type]
    stub.ctx.inventory = Inventory()
    assert ImageService.driver_version(stub) is None  # type: ignore[arg-type]


def test_select_base_reports_fit_wheels_and_tools():
    from ds01.services.images import ImageService

    rt = SimpleNamespace(image_inspect=lambda ref: None)
    stub = SimpleNamespace(ctx=SimpleNamespace(config=Config(), inventory=Inventory()), cfg=Config(), rt=rt)
    stub.driver_version = lambda: None
    base = ImageService.select_base(stub, "pytorch")  # type: ignore[arg-type]
    assert base["image"] == "ds01/base:latest" and base["pip"] == ["torch==2.8.0+cpu"]
    assert base["pip_index"] == "https://download.pytorch.org/whl/cpu" and base["fit"] == "cpu"
    assert "git" in base["tools"] and "openssh-server" in base["tools"]


@pytest.mark.parametrize("framework", ["pytorch", "jax", "tensorflow"])
def test_cpu_only_host_gets_cpu_builds(framework):
    e = default_for(CAT, framework, None)
    assert e.cuda is None and fit(e, None) == "cpu", e.image


def test_cuda_images_are_cpu_only_here_not_refused():
    e = select(CAT, "pytorch==2.5", None)  # no CPU build of 2.5: the CUDA one, on the CPU
    assert e.cuda and fit(e, None) == "cpu-only-here"
    assert fit(e, "470.82.01") is None  # a driver too old for its CUDA is still refused
    assert fit(e, "550.54.15") == "gpu"


def test_gpu_hosts_keep_gpu_defaults():
    assert default_for(CAT, "pytorch", "550.54.15").cuda
    assert default_for(CAT, "jax", "550.54.15").image.startswith("nvcr.io/nvidia/jax:")


def test_cpu_entries_are_wheels_on_the_lab_base():
    cpu = [e for e in CAT.entries if e.pip]
    assert {e.framework for e in cpu} == {"pytorch", "jax", "tensorflow"}
    assert all(e.image == "ds01/base:latest" and e.local and e.cuda is None for e in cpu)


def test_picker_groups_by_version_and_variant_and_fits_24_rows():
    from ds01.cli.picker import PAGE, page, row_label, version_rows

    rows = [{**e.model_dump(mode="json"), "runnable": fit(e, None) is not None, "fit": fit(e, None),
             "allowed": True} for e in CAT.entries]
    vr = version_rows(rows, "pytorch")
    keys = [(r["framework_version"], r["variant"]) for r in vr]
    assert len(keys) == len(set(keys))  # one row per (version, variant): the best CUDA of it
    assert keys[0] == ("2.8.0", "cpu")  # no driver here: the CPU build first
    assert "runtime" in row_label(vr[1]) and "CPU only here" in row_label(vr[1])
    assert any("devel" in row_label(r) for r in vr)
    shown, more = page(vr, 0)
    assert len(shown) == PAGE and more and PAGE + 5 <= 23  # question + rows + more/all/back + answer
    old = [{**r, "runnable": False} for r in rows if r["framework"] == "jax" and r["cuda"]]
    assert version_rows(old, "jax") == [] and len(version_rows(old, "jax", show_all=True)) == len(old)


# --------------------------------------------------------------------------- item 6: requirements


def _fs(files: dict[str, str], dirs: set[str]):
    def kind(p: str) -> str | None:
        return "file" if p in files else "dir" if p in dirs or p == "." else None

    return files.get, kind


def test_requirement_inputs_follow_local_lines():
    files = {"requirements.txt": "numpy==2.0\n./wheels/x-1.0-py3-none-any.whl\n-e .\n-r more.txt\n"
             "-c constraints.txt\n./pkg[extra]\ngit+https://example.org/r.git\n--index-url https://x\n",
             "more.txt": "-r sub/a.txt\n", "sub/a.txt": "six\n", "constraints.txt": "six<2\n",
             "wheels/x-1.0-py3-none-any.whl": ""}
    got = requirement_inputs("requirements.txt", *_fs(files, {"pkg"}))
    assert got == [".", "constraints.txt", "more.txt", "pkg", "requirements.txt", "sub/a.txt",
                   "wheels/x-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("line, what", [("./wheels/missing.whl", "wheels/missing.whl"), ("-r nope.txt", "nope.txt"),
                                        ("-c ../outside.txt", "outside the project"),
                                        ("/abs/x.whl", "outside the project")])
def test_missing_or_outside_files_are_named(line, what):
    with pytest.raises(InvalidInput) as ei:
        requirement_inputs("requirements.txt", *_fs({"requirements.txt": line + "\n"}, set()))
    assert what in ei.value.message and ei.value.exit_code == 3


def test_add_accepts_project_paths():
    assert is_local_requirement("./wheels/x.whl") and is_local_requirement("wheels/x.whl")
    assert not is_local_requirement("numpy==2") and not is_local_requirement("-e .")


def test_dockerfile_copies_what_requirements_name():
    spec = DockerfileSpec(base_image="ds01/base:latest", project="p", requirements_file="requirements.txt",
                          requirements_inputs=("requirements.txt", "wheels/x.whl", "pkg"))
    text = spec.render()
    assert "COPY wheels/x.whl /workspace/wheels/x.whl" in text and "COPY pkg /workspace/pkg" in text
    assert "cd /workspace;" in text and "pip install --no-cache-dir -r requirements.txt" in text
    old = DockerfileSpec(base_image="ds01/base:latest", project="p", requirements_file="requirements.txt").render()
    assert REQ_BEGIN not in old  # no local files: the file as before
    new = sync_requirements(old, "requirements.txt", ["requirements.txt", "."])
    assert new is not None and "COPY . /workspace/" in new and REQ_BEGIN in new
    back = sync_requirements(new, "requirements.txt", ["requirements.txt", "wheels/y.whl"])
    assert "COPY . /workspace/" not in back and "COPY wheels/y.whl /workspace/wheels/y.whl" in back
    assert sync_requirements("FROM x\nRUN true\n", "requirements.txt", ["."]) is None  # the user's own
    with pytest.raises(InvalidInput):
        DockerfileSpec(base_image="x", project="p", requirements_inputs=("a b.whl",))


def test_project_sync_and_missing_file(tmp_path: Path):
    from ds01.projects.requirements import sync_dockerfile

    text = DockerfileSpec(base_image="ds01/base:latest", project="p", requirements_file="requirements.txt").render()
    (tmp_path / "Dockerfile").write_text(text)
    (tmp_path / "requirements.txt").write_text("./wheels/x.whl\n")
    with pytest.raises(InvalidInput) as ei:
        sync_dockerfile(tmp_path)
    assert "wheels/x.whl" in ei.value.message
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels/x.whl").write_bytes(b"")
    assert sync_dockerfile(tmp_path) and "COPY wheels/x.whl" in (tmp_path / "Dockerfile").read_text()
    assert not sync_dockerfile(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/y.whl").write_bytes(b"")
    (tmp_path / "requirements.txt").write_text("./data/y.whl\n")
    with pytest.raises(InvalidInput) as ei:  # the context never has data/: said before building
        sync_dockerfile(tmp_path)
    assert "data/y.whl" in ei.value.message


def test_requirements_added_to_a_generated_dockerfile_with_tools():
    from ds01.cli.commands import images as cli

    text = DockerfileSpec(base_image="ds01/base:latest", project="demo", tools=("git",)).render()
    new = cli._reconstructed_without_req(text, "demo")
    assert new is not None and "COPY requirements.txt /opt/ds01/requirements.txt" in new
    assert new.index("COPY requirements.txt") < new.index("# Caches live in the workspace")
    assert cli._reconstructed_without_req(text.replace("project 'demo'", "project 'x'"), "demo") is None


def test_gitignore_keeps_wheels_out():
    from ds01.projects.scaffold import gitignore_text

    assert "\nwheels/\n" in gitignore_text("blank") and "\n*.whl\n" in gitignore_text("data-science")


# --------------------------------------------------------------------------- item 8: tools


def test_tools_installed_only_when_missing_and_configurable():
    text = DockerfileSpec(base_image="python:3.12-slim", project="p", tools=tuple(Config().images.tools)).render()
    assert "for p in git curl openssh-client openssh-server less vim-tiny procps; do" in text
    assert 'if [ -n "$missing" ]; then apt-get' in text and "/etc/ssh/ssh_host_*" in text
    assert "apt-get" not in DockerfileSpec(base_image="x", project="p").render()
    with pytest.raises(Exception):
        Config.model_validate({"images": {"tools": ["git; rm -rf /"]}})
    assert Config.model_validate({"images": {"tools": ["nano"]}}).images.tools == ["nano"]


def test_bootstrap_base_carries_the_tools():
    from ds01.images import bootstrap

    assert {"git", "curl", "openssh-client", "less", "vim-tiny", "procps"} <= set(bootstrap.TOOLS)
    assert "openssh-server" in bootstrap.PACKAGES


def test_framework_wheels_rendered_from_their_index():
    text = DockerfileSpec(base_image="ds01/base:latest", project="p", framework="pytorch 2.8.0",
                          framework_pip=("torch==2.8.0+cpu",),
                          framework_index="https://download.pytorch.org/whl/cpu").render()
    assert ("pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu torch==2.8.0+cpu"
            in text)


# --------------------------------------------------------------------------- wheelhouse


def test_wheelhouse_served_read_only(tmp_path: Path):
    from ds01.images.wheelhouse import Wheelhouse

    (tmp_path / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "secret.whl").write_bytes(b"no")
    wh = Wheelhouse()
    try:
        url = wh.url(str(tmp_path), "127.0.0.1", 0 or _free_port())
        assert url is not None
        page = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'href="demo-1.0-py3-none-any.whl"' in page and "sub" not in page
        assert urllib.request.urlopen(url + "demo-1.0-py3-none-any.whl", timeout=5).read() == b"wheel"
        for bad in ("sub/secret.whl", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(url + bad, timeout=5)
            assert ei.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
        assert ei.value.code == 405
    finally:
        wh.close()


def test_build_args_name_the_wheelhouse(tmp_path: Path):
    from ds01.images.buildargs import BuildArgs

    port = _free_port()
    b = Config.model_validate({"build": {"ca_bundle": None, "wheelhouse": str(tmp_path),
                                         "wheelhouse_address": "127.0.0.1", "wheelhouse_port": port}}).build
    ba = BuildArgs()
    try:
        args = ba(b)
        assert args["PIP_FIND_LINKS"] == f"http://127.0.0.1:{port}/" and args["PIP_TRUSTED_HOST"] == "127.0.0.1"
    finally:
        ba._wheelhouse.close()
    assert "ARG PIP_FIND_LINKS" in DockerfileSpec(base_image="x", project="p").render()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- item 3: rebuilt image


def test_recheck_sends_the_fast_path_to_the_daemon(tmp_path: Path, monkeypatch):
    from ds01.projects import stamps

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    ws = str(tmp_path / "ws")
    os.makedirs(ws)
    Path(ws, "Dockerfile").write_text("FROM x\n")
    sig = stamps.file_signature(ws)
    stamps.write_stamp("p", {"hash": "h", "image_id": "old", "workspace": ws, "files": sig, "covers": True})
    current = lambda: ("h", True)  # noqa: E731
    assert stamps.stamp_verdict(stamps.read_stamp("p"), ws, current, signature=sig) is None
    stamps.mark_recheck("p")
    assert "rebuilt" in stamps.stamp_verdict(stamps.read_stamp("p"), ws, current, signature=sig)
    # the click path, which asks the daemon about the image, is not sent to build again by it
    assert stamps.stamp_verdict(stamps.read_stamp("p"), ws, current, signature=sig, image={"id": "old"}) is None
    stamps.mark_recheck("p", False)
    assert stamps.stamp_verdict(stamps.read_stamp("p"), ws, current, signature=sig) is None


def test_build_marks_recheck_when_the_container_is_outdated(tmp_path: Path, monkeypatch):
    from ds01.cli import building
    from ds01.projects import stamps

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    stamps.write_stamp("p", {"hash": "h", "image_id": "a", "workspace": "/w"})
    monkeypatch.setattr(building.api, "image_build",
                        lambda c, p, **kw: iter([{"result": {"image": "ds01/u/p:latest", "outdated": ["p"]}}]))
    building.build("p", as_json=True)
    assert stamps.read_stamp("p")["recheck"] is True


def test_next_hint_after_a_build_names_the_right_command():
    from ds01.cli.building import next_after_build

    res = {"image": "ds01/u/p:latest", "used_by": ["p"], "outdated": ["p"]}
    assert next_after_build("p", res).startswith("project-launch p --yes")
    assert next_after_build("p", {**res, "outdated": []}).startswith("container-run p")
    assert next_after_build("p", {"image": "ds01/u/p:latest", "used_by": []}).startswith("project-launch p")


def test_replace_outdated_without_a_tty_keeps_it_and_says_how(monkeypatch, capsys, tmp_path):
    from ds01.cli import launching, verbs
    from ds01.projects import stamps

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    stamps.write_stamp("p", {"hash": "h", "image_id": "a", "workspace": "/w"})
    monkeypatch.setattr(verbs, "find_container", lambda p, missing_ok=False: {"project": p, "status": "running"})
    retired = []
    monkeypatch.setattr(launching.api, "container_retire", lambda c, p, **kw: retired.append(p))
    monkeypatch.setattr(launching, "is_tty", lambda: False)
    launching.replace_outdated("p", False, False)
    out = capsys.readouterr().out
    assert not retired and "previous image" in out and "project-launch p --yes" in out
    assert stamps.read_stamp("p")["recheck"] is True
    launching.replace_outdated("p", True, False)
    assert retired == ["p"]


# --------------------------------------------------------------------------- item 9


def test_admin_typo_says_did_you_mean():
    from ds01.cli.commands.admin import admin

    r = CliRunner().invoke(admin, ["dashbord"])
    assert r.exit_code == 2 and "Did you mean: dashboard" in r.output


def test_container_deploy_takes_the_create_flags(monkeypatch):
    from ds01.cli.commands import containers, workflows

    create = {p.name for p in containers.create.params}
    deploy = {p.name for p in workflows.container_deploy.params}
    assert create <= deploy
    sent = {}
    monkeypatch.setattr(workflows.verbs.api, "container_deploy",
                        lambda c, p, **kw: sent.update(kw) or {"project": p, "name": "n", "gpus": []})
    r = CliRunner().invoke(workflows.container_deploy, ["p", "--cpu-only", "--background"])
    assert r.exit_code == 0, r.output
    assert sent["cpu_only"] is True


def test_queue_hint_points_to_gpu_queue(capsys):
    from ds01.cli.verbs import report_deploy

    report_deploy("p", {"queued": True, "position": 1})
    assert "gpu-queue" in capsys.readouterr().out


def test_refused_create_leaves_no_empty_workspace(tmp_path: Path):
    from ds01.services.workspace import no_workspace_if_refused

    who = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), name="me", home=str(tmp_path), groups=[])
    cfg = Config()
    ws = tmp_path / "workspace" / "proj"
    with pytest.raises(PolicyDenied):
        with no_workspace_if_refused(who, "proj", cfg):
            ws.mkdir(parents=True)  # what ensure_workspace does, then the limit check says no
            raise PolicyDenied("over the limit")
    assert not ws.exists()
    ws.mkdir()
    with pytest.raises(DS01Error):
        with no_workspace_if_refused(who, "proj", cfg):  # it existed before: never removed
            raise DS01Error("no")
    assert ws.exists()
