"""Catalog refresh (issue 17 item 4): tag parsing, the overlay, the Registry v2 client's token
flow and pagination against a tiny http.server fake."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ds01.images import catalog, catalog_refresh as cr
from ds01.images.registry import Registry, RegistryError, next_link, parse_challenge, split_repository

FAM = {f.name: f for f in cr.FAMILIES}


def test_pytorch_tag_parsed_python_unknown():
    e = cr.parse_tag(FAM["pytorch"], "2.13.1-cuda12.9-cudnn9-devel")
    assert e == {"framework": "pytorch", "image": "pytorch/pytorch:2.13.1-cuda12.9-cudnn9-devel",
                 "source": "dockerhub-pytorch", "framework_version": "2.13.1", "variant": "devel",
                 "cuda": "12.9", "python": None, "min_driver": "525.60.13", "gpu_archs": []}
    assert catalog.CatalogEntry.model_validate(e).python is None
    assert cr.parse_tag(FAM["pytorch"], "2.8.0-cuda11.8-cudnn9-runtime")["min_driver"] == "450.80.02"


def test_unknown_cuda_major_is_unknown_not_invented():
    e = cr.parse_tag(FAM["pytorch"], "2.14.0-cuda13.0-cudnn9-runtime")
    assert e["cuda"] == "13.0" and "min_driver" not in e and "CUDA 13.0" in e["unknown"]


@pytest.mark.parametrize("tag", ["latest", "nightly", "2.8.0-cuda12.9-cudnn9-runtime-extra", "2.8-cuda12-cudnn9-devel"])
def test_other_tags_skipped(tag):
    assert cr.parse_tag(FAM["pytorch"], tag) is None


def test_other_families():
    ngc = cr.parse_tag(FAM["ngc-pytorch"], "25.09-py3")
    assert ngc["framework_version"] is None and ngc["variant"] == "ngc-25.09" and ngc["unknown"]
    assert cr.parse_tag(FAM["ngc-pytorch"], "25.09-py3-igpu") is None
    tf_gpu = cr.parse_tag(FAM["tensorflow"], "2.20.0-gpu")
    assert tf_gpu["cuda"] is None and "CUDA" in tf_gpu["unknown"]  # never a CPU entry by mistake
    tf_cpu = cr.parse_tag(FAM["tensorflow"], "2.20.0")
    assert tf_cpu["variant"] == "cpu" and tf_cpu["cuda"] is None and "unknown" not in tf_cpu
    py = cr.parse_tag(FAM["python"], "3.14.0-slim")
    assert py["python"] == "3.14.0" and py["image"] == "python:3.14.0-slim"
    assert cr.parse_tag(FAM["python"], "3.14.0-slim-bookworm") is None
    assert cr.parse_tag(FAM["ngc-tensorflow"], "25.02-tf2-py3")["framework"] == "tensorflow"


def test_families_selection():
    assert [f.name for f in cr.families(["jax"])] == ["ngc-jax"]
    assert [f.name for f in cr.families(["pytorch"])] == ["pytorch", "ngc-pytorch"]
    with pytest.raises(ValueError, match="unknown catalog family"):
        cr.families(["caffe"])


def test_build_overlay_keeps_only_new_and_diff():
    known = [e.model_dump() for e in catalog.shipped_entries()]
    tags = ["2.8.0-cuda12.9-cudnn9-runtime",  # shipped
            "2.13.0-cuda12.9-cudnn9-runtime", "2.13.0-cuda12.9-cudnn8-runtime",  # same key: one kept
            "latest"]
    ov = cr.build_overlay({"pytorch": tags}, known)
    assert [e["image"] for e in ov["entries"]] == ["pytorch/pytorch:2.13.0-cuda12.9-cudnn8-runtime"]
    assert ov["duplicates"] == ["pytorch/pytorch:2.13.0-cuda12.9-cudnn9-runtime"]
    d = cr.diff(None, ov)
    assert d["added"] == ["pytorch/pytorch:2.13.0-cuda12.9-cudnn8-runtime"] and d["removed"] == []
    # a later refresh of another family keeps this family's part
    ov2 = cr.build_overlay({"python": ["3.14.0-slim"]}, known, ov)
    assert {e["image"] for e in ov2["entries"]} == {"pytorch/pytorch:2.13.0-cuda12.9-cudnn8-runtime",
                                                    "python:3.14.0-slim"}
    assert cr.diff(ov, ov2)["added"] == ["python:3.14.0-slim"]
    # a tag gone from the registry leaves the overlay
    assert cr.diff(ov2, cr.build_overlay({"pytorch": []}, known, ov2))["removed"] == [
        "pytorch/pytorch:2.13.0-cuda12.9-cudnn8-runtime"]


def test_overlay_merged_into_catalog(tmp_path):
    known = [e.model_dump() for e in catalog.shipped_entries()]
    ov = cr.build_overlay({"pytorch": ["2.13.0-cuda12.9-cudnn9-runtime"], "ngc-pytorch": ["99.01-py3"]}, known)
    path = str(tmp_path / cr.OVERLAY_NAME)
    cr.write_overlay(path, ov, {"registry": None})
    n = len(catalog.load_catalog())
    cr.set_overlay_path(path)
    try:
        cat = catalog.load_catalog()
        assert len(cat) == n + 1  # the NGC tag is listed as unknown only
        e = catalog.select(cat, "pytorch==2.13", "570.86.15")
        assert e.image == "pytorch/pytorch:2.13.0-cuda12.9-cudnn9-runtime" and e.python is None
        with open(path, "a") as f:  # a broken overlay never stops the catalog
            f.write("entries: [ {framework: pytorch} ]\n: :\n")
        assert len(catalog.load_catalog()) == n
    finally:
        cr.set_overlay_path(None)
    assert len(catalog.load_catalog()) == n


def test_challenge_and_link_parsing():
    assert parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:pytorch/pytorch:pull"') == {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:pytorch/pytorch:pull"}
    assert parse_challenge('Basic realm="x"') is None
    assert next_link('</v2/a/tags/list?last=x&n=2>; rel="next"', "http://h:1/v2/a/tags/list?n=2") == \
        "http://h:1/v2/a/tags/list?last=x&n=2"
    assert next_link(None, "http://h") is None
    assert split_repository("python") == ("docker.io", "library/python")
    assert split_repository("pytorch/pytorch") == ("docker.io", "pytorch/pytorch")
    assert split_repository("nvcr.io/nvidia/jax") == ("nvcr.io", "nvidia/jax")


class _Fake(BaseHTTPRequestHandler):
    """A registry that wants an anonymous bearer token and pages its tags 2 at a time."""

    tags = [f"2.{i}.0-cuda12.9-cudnn9-runtime" for i in range(20, 25)]
    token_requests: list[dict] = []
    auth_mode = "bearer"

    def log_message(self, *a):
        pass

    def _json(self, code, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/token":
            type(self).token_requests.append(q)
            return self._json(200, {"token": "T0K"})
        if self.headers.get("Authorization") != "Bearer T0K":
            host = f"http://{self.headers['Host']}"
            if self.auth_mode == "basic":
                return self._json(401, {}, [("WWW-Authenticate", 'Basic realm="x"')])
            return self._json(401, {"errors": [{"code": "UNAUTHORIZED"}]}, [(
                "WWW-Authenticate",
                f'Bearer realm="{host}/token",service="fake",scope="repository:pytorch/pytorch:pull"')])
        if u.path == "/v2/nope/tags/list":
            return self._json(404, {"errors": [{"code": "NAME_UNKNOWN"}]})
        assert u.path == "/v2/pytorch/pytorch/tags/list"
        start = self.tags.index(q["last"]) + 1 if "last" in q else 0
        page = self.tags[start:start + 2]
        more = start + 2 < len(self.tags)
        link = [("Link", f'</v2/pytorch/pytorch/tags/list?n=2&last={page[-1]}>; rel="next"')] if more else []
        return self._json(200, {"name": "pytorch/pytorch", "tags": page}, link)


@pytest.fixture
def fake():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    _Fake.token_requests = []
    _Fake.auth_mode = "bearer"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_token_flow_and_pagination(fake):
    reg = Registry(fake)
    assert reg.list_tags("pytorch/pytorch") == _Fake.tags
    # one token, asked for with the challenge's service and scope, reused for every page
    assert _Fake.token_requests == [{"service": "fake", "scope": "repository:pytorch/pytorch:pull"}]


def test_registry_errors(fake):
    with pytest.raises(RegistryError, match="no such repository"):
        Registry(fake).list_tags("nope")
    _Fake.auth_mode = "basic"
    with pytest.raises(RegistryError, match="unauthorized"):
        Registry(fake).list_tags("pytorch/pytorch")
    with pytest.raises(RegistryError, match="unreachable"):
        Registry("http://127.0.0.1:1").list_tags("x/y")
    with pytest.raises(RegistryError, match="not a registry URL"):
        Registry("ftp://x")
