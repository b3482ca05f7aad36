"""Pure parts of the image service: Dockerfile image references, ownership names, build log."""

from __future__ import annotations

import pytest

from ds01.errors import InvalidInput
from ds01.images.dockerfile_text import logical_lines
from ds01.images.buildargs import ca_for_build, pem_certs
from ds01.images.buildlog import BuildLog, clean_step
from ds01.images.catalog import user_image_owner
from ds01.images.dockerfile_check import image_refs


def test_logical_lines_join_continuations_and_drop_comments():
    text = "# c\nFROM a:1 \\\n  AS x\nRUN echo 1 \\\n# inner comment\n  && echo 2\n"
    assert [" ".join(x.split()) for x in logical_lines(text)] == ["FROM a:1 AS x", "RUN echo 1 && echo 2"]


def test_image_refs_stages_and_copy_from():
    r = image_refs("FROM --platform=linux/amd64 ds01/base:latest AS build\nRUN x\n"
                   "FROM python:3.11-slim\nCOPY --from=build /a /a\nCOPY --from=0 /b /b\n"
                   "COPY --from=debian:12 /etc/os-release /x\n")
    assert r.external == ["ds01/base:latest", "python:3.11-slim", "debian:12"]
    assert r.final_base == "python:3.11-slim"


def test_image_refs_final_stage_from_named_stage():
    r = image_refs("FROM ds01/base:latest AS b\nFROM b\n")
    assert r.external == ["ds01/base:latest"] and r.final_base == "ds01/base:latest"


@pytest.mark.parametrize("text", ["ARG B=x\nFROM $B\n", "FROM ${IMG}\n", "RUN echo\n", "# escape=`\nFROM a\n"])
def test_image_refs_refuses_what_cannot_be_checked(text):
    with pytest.raises(InvalidInput):
        image_refs(text)


def test_scratch_is_not_an_image():
    assert image_refs("FROM scratch\nCOPY x /x\n").external == []


@pytest.mark.parametrize("ref,owner", [
    ("ds01/alice/proj:latest", "alice"),
    ("ds01/alice/proj", "alice"),
    ("docker.io/ds01/alice/proj:1", "alice"),
    ("ds01/base:latest", None),
    ("pytorch/pytorch:2.5.1", None),
    ("registry:5000/ds01/alice/p", None),
])
def test_user_image_owner(ref, owner):
    assert user_image_owner(ref) == owner


RUN = ('Step 8/17 : RUN set -eu;     if [ -n "${DS01_CA_PEM:-}" ]; then printf \'%s\\n\' "$DS01_CA_PEM" > '
       '/tmp/ds01-ca.pem; export PIP_CERT=/tmp/ds01-ca.pem; fi;     python3 -m pip install -r /opt/r.txt;'
       '     rm -f /tmp/ds01-ca.pem')


def test_clean_step_cuts_the_ca_prologue():
    assert clean_step(RUN) == "Step 8/17 : RUN python3 -m pip install -r /opt/r.txt"


def test_build_log_tracks_step_and_tail():
    bl = BuildLog()
    for chunk in ["Step 1/2 : FROM x\n ---> abc\n", RUN + "\n", " ---> Running in 1\n",
                  "\x1b[91mERROR: No matching distribution\n\x1b[0m", "Removing intermediate container 1\n"]:
        bl.feed(chunk)
    e = bl.failure("The command '/bin/sh -c ...' returned a non-zero code: 1")
    assert e.details["step"].endswith("RUN python3 -m pip install -r /opt/r.txt")
    assert e.details["tail"] == ["ERROR: No matching distribution"]
    assert "exited with code 1" in e.message and "step 8/17" in e.message


def test_build_log_keeps_last_lines_only():
    bl = BuildLog()
    bl.feed("Step 1/1 : RUN x\n" + "".join(f"line {i}\n" for i in range(100)))
    assert bl.tail[0] == "line 80" and len(bl.tail) == 20


CERT_A = "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\nAAAA\n-----END CERTIFICATE-----\n"
CERT_B = "-----BEGIN CERTIFICATE-----\n" + "B" * 64 + "\n-----END CERTIFICATE-----\n"


def test_small_bundle_passed_whole():
    assert ca_for_build(CERT_A + CERT_B, set()) == CERT_A + CERT_B


def test_big_bundle_cut_to_the_non_standard_certs():
    known = set(pem_certs(CERT_A))
    out = ca_for_build(CERT_A + CERT_B, known, limit=len(CERT_A + CERT_B) - 1)
    assert pem_certs(out) == pem_certs(CERT_B)


def test_big_bundle_of_only_standard_certs_passes_nothing():
    assert ca_for_build(CERT_A, set(pem_certs(CERT_A)), limit=10) == ""


def test_too_many_own_cas_is_a_config_error():
    from ds01.errors import ConfigError

    with pytest.raises(ConfigError):
        ca_for_build(CERT_A + CERT_B, set(), limit=10)


def test_concurrent_build_limit_per_user():
    from types import SimpleNamespace

    from ds01.errors import PolicyDenied
    from ds01.models.config import Config
    from ds01.services.identity import Caller
    from ds01.services.images import ImageService

    cfg = Config.model_validate({"build": {"max_concurrent_per_user": 2}})
    svc = ImageService(SimpleNamespace(config=cfg))
    alice = Caller(1001, 1001, "alice", "/home/alice", "alice", frozenset(), False)
    bob = Caller(1002, 1002, "bob", "/home/bob", "bob", frozenset(), False)
    r1, r2 = svc._acquire(alice), svc._acquire(alice)
    with pytest.raises(PolicyDenied):
        svc._acquire(alice)
    svc._acquire(bob)()  # other users are not affected
    r1()
    r1()  # releasing twice frees one slot only
    svc._acquire(alice)
    with pytest.raises(PolicyDenied):
        svc._acquire(alice)
    r2()
