"""Security review regressions in the image build path (pure parts): one reference normaliser,
Docker-exact Dockerfile parsing, the rewrite, refused instructions, the bounded build log."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace

import pytest

from ds01.errors import InvalidInput, NotFound, PolicyDenied
from ds01.images.catalog import image_allowed, normalize_ref
from ds01.images.dockerfile_text import logical_lines, parse_instructions
from ds01.runtime.base import ImageInfo
from ds01.services.identity import Caller
from ds01.images.buildlog import MAX_PARTIAL, BuildLog
from ds01.images.catalog import user_image_owner
from ds01.images.dockerfile_check import check_dockerfile
from ds01.services.images import ImageService

BOB = "ds01/ds01-bob/x:latest"


# --------------------------------------------------------------------------- 1a: references

@pytest.mark.parametrize("ref", [
    "ds01/ds01-bob/x", "ds01/ds01-bob/x:latest", "docker.io/ds01/ds01-bob/x:latest",
    "index.docker.io/ds01/ds01-bob/x:latest", "registry-1.docker.io/ds01/ds01-bob/x",
    "INDEX.DOCKER.IO/ds01/ds01-bob/x", "Docker.IO/ds01/ds01-bob/x:1",
    "ds01/ds01-bob/x@sha256:" + "a" * 64, "ds01/ds01-bob/x:latest@sha256:" + "a" * 64,
])
def test_every_spelling_of_a_per_user_image_has_its_owner(ref):
    assert user_image_owner(ref) == "ds01-bob"
    assert normalize_ref(ref).repository == "docker.io/ds01/ds01-bob/x"


@pytest.mark.parametrize("ref,canonical", [
    ("python", "docker.io/library/python:latest"),
    ("docker.io/library/python:3", "docker.io/library/python:3"),
    ("index.docker.io/python:3", "docker.io/library/python:3"),
    ("python:3@sha256:" + "b" * 64, "docker.io/library/python@sha256:" + "b" * 64),
    ("nvcr.io/nvidia/pytorch:24.05-py3", "nvcr.io/nvidia/pytorch:24.05-py3"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
])
def test_normalize_ref(ref, canonical):
    assert normalize_ref(ref).canonical == canonical


@pytest.mark.parametrize("ref,ok", [
    ("index.docker.io/library/python:3.12", True),
    ("registry-1.docker.io/library/python:3.12", True),
    ("docker.io/python:3.12", True),
    ("index.docker.io/evil/python:3", False),
    ("registry-1.docker.io/ds01/base:latest", True),
    ("index.docker.io/pytorch/pytorch-evil:1", False),
])
def test_allowed_prefixes_use_the_same_normaliser(ref, ok):
    assert image_allowed(ref, ["python:", "ds01/", "pytorch/pytorch"]) is ok


class _Rt:
    def __init__(self, images):
        self.images = images

    def image_inspect(self, ref):
        return self.images.get(ref)


def _svc(images):
    from ds01.models.config import Config
    from ds01.runtime.base import RuntimeImages

    rt = _Rt(images)
    RuntimeImages.register(_Rt)
    return ImageService(SimpleNamespace(config=Config(), runtime=rt))


ALICE = Caller(1001, 1001, "ds01-alice", "/home/a", "ds01-alice", frozenset(), False)


def _img(tags, uid=None, onbuild=()):
    labels = {"ds01.managed": "true", "ds01.uid": str(uid)} if uid is not None else {}
    return ImageInfo("sha256:" + "c" * 64, list(tags), labels, 1, 0.0, onbuild=list(onbuild))


@pytest.mark.parametrize("ref", [
    "index.docker.io/" + BOB, "docker.io/" + BOB, "registry-1.docker.io/" + BOB, "INDEX.DOCKER.IO/" + BOB,
    "ds01/ds01-bob/x@sha256:" + "a" * 64, "ds01/ds01-alice/a/b",
])
def test_check_use_refuses_other_users_namespace_in_any_spelling(ref):
    svc = _svc({ref: _img([BOB], uid=1002)})
    with pytest.raises(NotFound):
        svc.check_use(ALICE, ref)


@pytest.mark.parametrize("ref", ["3f2a", "sha256:3f2a", "c" * 64, "sha256:" + "c" * 64])
def test_check_use_refuses_image_ids(ref):
    with pytest.raises(InvalidInput):
        _svc({ref: _img(["ds01/base:latest"])}).check_use(ALICE, ref)


def test_check_use_refuses_an_image_found_under_another_name_or_owned_by_another_uid():
    # the engine answered for a name the image does not carry (an id prefix, say): refused
    with pytest.raises(NotFound):
        _svc({"cafe1:latest": _img(["python:3"])}).check_use(ALICE, "cafe1:latest")
    # a lab-looking name on another user's image: refused by its labels
    with pytest.raises(NotFound):
        _svc({"ds01/base:latest": _img(["ds01/base:latest"], uid=1002)}).check_use(ALICE, "ds01/base:latest")


def test_check_use_allows_own_and_lab_images_in_any_spelling():
    own = "ds01/ds01-alice/p:latest"
    svc = _svc({"index.docker.io/" + own: _img([own], uid=1001), "docker.io/ds01/base": _img(["ds01/base:latest"])})
    assert svc.check_use(ALICE, "index.docker.io/" + own) is not None
    assert svc.check_use(ALICE, "docker.io/ds01/base") is not None
    assert svc.check_use(ALICE, "python:3") is None  # not local: the engine pulls (allowed list decides)


def test_base_image_with_onbuild_is_refused():
    svc = _svc({"ds01/base:latest": _img(["ds01/base:latest"], onbuild=["COPY --from=" + BOB + " /s /s"])})
    refs = check_dockerfile("FROM ds01/base:latest\n").refs
    with pytest.raises(PolicyDenied, match="ONBUILD"):
        svc._check_refs(ALICE, list(refs.external))


# --------------------------------------------------------------------------- 1b: the parser

@pytest.mark.parametrize("text", [
    "FROM ds01-test/busybox\nCOPY \\\n\n--from=" + BOB + " /s /d\n",          # empty line in a continuation
    "FROM ds01-test/busybox\nCOPY \\\n   \t\n--from=" + BOB + " /s /d\n",     # whitespace-only line
    "FROM ds01-test/busybox\nCOPY \\\n# c\n  # c\n--from=" + BOB + " /s /d\n",  # comments inside
    "FROM ds01-test/busybox\r\nCOPY \\ \t\r\n--from=" + BOB + " /s /d\r\n",   # CRLF, \ + trailing blanks
    "FROM ds01-test/busybox\nCOPY --\"from\"=" + BOB + " /s /d\n",            # quoted flag name
    "FROM ds01-test/busybox\nCOPY --fr\\om=" + BOB + " /s /d\n",              # escaped flag name
    "\ufeffFROM ds01-test/busybox\nCOPY --from=" + BOB + " /s /d\n",          # BOM
])
def test_parser_sees_what_docker_sees(text):
    assert BOB in check_dockerfile(text).refs.external


def test_joining_follows_docker_exactly():
    text = "FROM alpine\nRUN echo a\\\nb \\  \n\n  # x\n   c\n"
    assert logical_lines(text) == ["FROM alpine", "RUN echo ab    c"]
    ins = parse_instructions("COPY --from=x --chown=1:2 a b\n")[0]
    assert ins.keyword == "copy" and ins.flags == [("from", "x"), ("chown", "1:2")] and ins.rest == "a b"


@pytest.mark.parametrize("text", ["#\tescape=`\nFROM alpine\n", "  # ESCAPE = `\nFROM alpine\n", "# escape=\\\n# escape=\\\nFROM alpine\n"])
def test_escape_directive_in_every_spelling(text):
    with pytest.raises(InvalidInput):
        check_dockerfile(text)


def test_escape_directive_after_a_comment_is_a_comment():
    ins = check_dockerfile("# hello\n# escape=`\nFROM alpine\nRUN echo `\nRUN two\n").instructions
    assert [i.line for i in ins] == ["FROM alpine", "RUN echo `", "RUN two"]


def test_rewrite_is_one_checked_instruction_per_line():
    text = "# c\nFROM ds01/base:latest AS b\n\nRUN echo 1 \\\n  # inner\n\n  && echo 2\nCOPY --\"from\"=b /a /a\n"
    out = check_dockerfile(text).render()
    assert out == "FROM ds01/base:latest AS b\nRUN echo 1   && echo 2\nCOPY --from=b /a /a\n"
    assert check_dockerfile(out).render() == out  # what was checked is what is built


def test_empty_line_does_not_end_an_instruction():
    # Docker joins through the empty line: this FROM has too many words, refused here as there
    text = "FROM ds01/base:latest AS b \\\n\nRUN echo 1\n"
    with pytest.raises(InvalidInput, match="FROM needs"):
        check_dockerfile(text)


def test_rewrite_reparses_identically_for_tricky_input():
    text = "FROM alpine\nRUN x \\\n\n  y\nLABEL \"k\"=\"v w\" \\\n  other=1\nCOPY --chown=1:1 [\"a b\", \"/c\"]\n"
    out = check_dockerfile(text).render()
    assert [i.line for i in parse_instructions(out)] == out.splitlines()
    assert check_dockerfile(out).render() == out


@pytest.mark.parametrize("text,match", [
    ("FROM alpine\nRUN <<EOF\necho\nEOF\n", "heredoc"),
    ("FROM alpine\nCOPY <<EOF /x\nhi\nEOF\n", "heredoc"),
    ("FROM alpine\nONBUILD RUN id\n", "ONBUILD"),
    ("FROM alpine\nonbuild COPY --from=" + BOB + " /s /s\n", "ONBUILD"),
    ("FROM alpine\nLABEL ds01.managed=true\n", "ds01"),
    ("FROM alpine\nLABEL \"DS01.uid\"=0\n", "ds01"),
    ("FROM alpine\nLABEL x=1 ds01\\.user=bob\n", "ds01"),
    ("FROM alpine\nLABEL ds01.uid 0\n", "ds01"),
    ("FROM alpine\nLABEL ${X}uid=0\n", "variables"),
    ("FROM alpine\nADD https://example.com/x /x\n", "URL"),
    ("FROM alpine\nADD [\"http://example.com/x\", \"/x\"]\n", "URL"),
    ("FROM alpine\nADD \"https\"://example.com/x /x\n", "URL"),
    ("FROM alpine\nADD $SRC /x\n", "variables"),
    ("FROM alpine\nRUN --mount=type=bind,from=" + BOB + ",target=/m cat /m/s\n", "not supported"),
    ("FROM alpine\nCOPY --from=\"" + BOB + "\" /s /s\n", ""),  # quotes processed: still checked (see below)
    ("FROM alpine\nRUN a\u00a0b\n", "unusual"),
    ("FROM alpine\nRUN a\rb\n", "unusual"),
    ("FROM \"" + BOB + "\"\n", "valid image"),
    ("FROM ds01/ds01-b\\ob/x\n", "valid image"),
    ("FROM 3f2a\n", "id"),
    ("FROM alpine\nRUN x \\\\\n", "continuation"),
    ("FROM alpine\nFROBNICATE x\n", "unknown"),
])
def test_refused_dockerfiles(text, match):
    if match == "":
        assert BOB in check_dockerfile(text).refs.external
        return
    with pytest.raises((InvalidInput, PolicyDenied), match=match):
        check_dockerfile(text)


def test_stage_names_and_copy_from_resolution_unchanged():
    r = check_dockerfile("FROM ds01/base:latest AS build\nFROM python:3.11-slim\nCOPY --from=BUILD /a /a\n"
                         "COPY --from=0 /b /b\n").refs
    assert r.external == ["ds01/base:latest", "python:3.11-slim"]


def test_label_reset_after_from_of_a_managed_image():
    checked = check_dockerfile("FROM ds01/ds01-alice/p:latest\nRUN x\n")
    resets = ImageService._label_resets(checked, {"ds01/ds01-alice/p:latest": _img(["ds01/ds01-alice/p:latest"], 1001)})
    assert checked.render(resets).splitlines() == ["FROM ds01/ds01-alice/p:latest", 'LABEL ds01.managed="build"', "RUN x"]


# --------------------------------------------------------------------------- 6: the build log

def test_build_log_is_linear_and_bounded_without_newlines():
    import time

    bl = BuildLog()
    bl.feed("Step 1/2 : RUN x\n")
    chunk = "a" * 32768
    t0 = time.monotonic()
    for _ in range(2000):  # 64 MiB without a newline
        bl.feed(chunk)
    assert time.monotonic() - t0 < 5
    assert len(bl._partial) <= MAX_PARTIAL
    bl.feed("b\nnext\n")
    assert bl.tail[-2].startswith("[…] ") and bl.tail[-2].endswith("ab") and len(bl.tail[-2]) <= MAX_PARTIAL + 4
    assert bl.tail[-1] == "next"


def test_build_log_notices_onbuild_triggers():
    bl = BuildLog()
    bl.feed("Step 1/2 : FROM x\n# Executing 1 build trigger\n")
    assert bl.triggers


# --------------------------------------------------------------------------- 2: the context re-pack

def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, kind in members:
            ti = tarfile.TarInfo(name)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def _repack(members, max_bytes=10**6):
    from ds01.images.build_context import _repack as rp

    out = io.BytesIO()
    w = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
    return rp(_tar(members), w, max_bytes), w, out


def test_repack_holds_back_the_dockerfile_and_seal_sends_the_checked_one():
    from ds01.images.build_context import BuildContext

    (df, digest, files, total), w, out = _repack([("Dockerfile", b"FROM evil\n", "f"), ("a/b.txt", b"hi", "f")])
    assert df == b"FROM evil\n" and files == 1 and total == 2 and digest.startswith("sha256:")
    ctx = BuildContext(out, w, digest, files, total, df.decode(), "/p")
    ctx.seal("FROM good\n")
    with tarfile.open(fileobj=out) as t:
        names = t.getnames()
        assert names.count("Dockerfile") == 1 and "a/b.txt" in names
        assert t.extractfile("Dockerfile").read() == b"FROM good\n"


@pytest.mark.parametrize("members", [
    [("Dockerfile", b"FROM alpine\n", "f"), ("./Dockerfile", b"FROM evil\n", "f")],
    [("Dockerfile", "x", "sym")],
    [("Dockerfile", b"FROM alpine\n", "f"), ("x", "Dockerfile", "link")],
    [("../x", b"x", "f")],
    [("Dockerfile/x", b"x", "f")],
])
def test_repack_refuses_what_the_child_never_writes(members):
    from ds01.images.build_context import _Bad

    with pytest.raises(_Bad):
        _repack(members)


def test_repack_enforces_the_size_limit_itself():
    from ds01.images.build_context import _Overflow

    with pytest.raises(_Overflow):
        _repack([("Dockerfile", b"FROM alpine\n", "f"), ("big", b"x" * 100, "f")], max_bytes=50)


def test_generated_dockerfiles_pass_and_old_generated_label_is_left_out():
    from ds01.images.dockerfile import DockerfileSpec, render_dockerfile

    text = render_dockerfile(DockerfileSpec(base_image="ds01/base:latest", project="p1", framework="pytorch 2.5.1",
                                            pip_packages=("six",), requirements_file="requirements.txt"))
    check_dockerfile(text)
    old = 'FROM ds01/base:latest\nLABEL ds01.project="p1" ds01.framework="pytorch 2.5.1"\nRUN x\n'
    assert check_dockerfile(old).render() == "FROM ds01/base:latest\nRUN x\n"
    with pytest.raises(PolicyDenied):  # anything else in the ds01.* namespace stays refused
        check_dockerfile('FROM ds01/base:latest\nLABEL ds01.project="p1" ds01.managed="true"\n')
