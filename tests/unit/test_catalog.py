"""The L1 image catalog: shipped data is valid, and selection by host driver is right."""

from __future__ import annotations

from collections import Counter

import pytest
from packaging.version import Version

from ds01.errors import ConfigError, InvalidInput, PolicyDenied
from ds01.images.catalog import (
    Catalog,
    CatalogEntry,
    check_image_allowed,
    default_for,
    image_allowed,
    load_catalog,
    parse_framework_spec,
    runnable,
    select,
)
from ds01.models.config import ImagesConfig


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


def gpu_entry(version: str, cuda: str, driver: str, variant: str = "runtime", **kw) -> CatalogEntry:
    return CatalogEntry(
        framework=kw.pop("framework", "pytorch"),
        framework_version=version,
        variant=variant,
        cuda=cuda,
        python="3.11",
        min_driver=driver,
        gpu_archs=["sm_80"],
        image=kw.pop("image", f"pytorch/pytorch:{version}-cuda{cuda}-{variant}"),
        **kw,
    )


# --------------------------------------------------------------------------- shipped data


def test_at_least_150_entries(cat):
    assert len(cat) >= 150


def test_gpu_frameworks_alone_reach_150(cat):
    assert sum(1 for e in cat.entries if e.framework in ("pytorch", "tensorflow", "jax")) >= 150


def test_all_frameworks_present(cat):
    counts = Counter(e.framework for e in cat.entries)
    for f in ("pytorch", "tensorflow", "jax", "python"):
        assert counts[f] > 0, f


def test_unique_keys_and_images(cat):
    keys = [e.key for e in cat.entries]
    images = [e.ident for e in cat.entries]  # an image with wheels on top is another entry
    assert len(keys) == len(set(keys))
    assert len(images) == len(set(images))


def test_versions_parse(cat):
    for e in cat.entries:
        Version(e.framework_version)
        Version(e.python)
        if e.cuda:
            Version(e.cuda)


def test_every_image_allowed_by_default_config(cat):
    allowed = ImagesConfig().allowed
    bad = [e.image for e in cat.entries if not image_allowed(e.image, allowed)]
    assert bad == []


def test_gpu_fields_consistent(cat):
    for e in cat.entries:
        if e.cuda:
            assert e.min_driver and e.gpu_archs, e.image
        else:
            assert e.min_driver is None and e.gpu_archs == [], e.image


def test_min_driver_rule(cat):
    """The documented rule: CUDA 11.0 → 450.36.06, 11.1+ → 450.80.02, 12.x → 525.60.13."""
    for e in cat.entries:
        if not e.cuda:
            continue
        major, minor = (int(p) for p in e.cuda.split(".")[:2])
        want = "525.60.13" if major == 12 else ("450.36.06" if minor == 0 else "450.80.02")
        assert e.min_driver == want, e.image


def test_image_references_match_fields(cat):
    for e in cat.entries:
        if e.image.startswith("pytorch/pytorch:"):
            assert e.image.startswith(f"pytorch/pytorch:{e.framework_version}-cuda{e.cuda}-cudnn")
            assert e.image.endswith("-" + e.variant)
        elif e.image.startswith("tensorflow/tensorflow:"):
            suffix = f"-{e.variant}" if e.cuda else ""
            assert e.image == f"tensorflow/tensorflow:{e.framework_version}{suffix}"
        elif e.image.startswith("nvcr.io/nvidia/"):
            assert e.variant.startswith("ngc-") and e.variant[4:] in e.image
        elif e.image.startswith("python:"):
            assert e.image == f"python:{e.framework_version}-slim"


def test_local_base_is_cpu_default(cat):
    local = [e for e in cat.entries if e.local and not e.pip]  # the others: CPU wheels on top of it
    assert {e.image for e in cat.entries if e.local} == {"ds01/base:latest"}
    assert [e.image for e in local] == ["ds01/base:latest"]
    assert local[0].default and local[0].cuda is None and local[0].framework == "python"
    assert default_for(cat, "python", None).image == "ds01/base:latest"
    assert default_for(cat, "python", "550.54.15").image == ImagesConfig().default


# --------------------------------------------------------------------------- driver filtering


@pytest.mark.parametrize(
    "min_driver, host, ok",
    [
        ("525.60.13", "525.60.13", True),
        ("525.60.13", "525.60.12", False),
        ("525.60.13", "525.105.17", True),
        ("525.60.13", "535", True),
        ("525.60.13", "470.82.01", False),
        ("450.80.02", "470.82.01", True),
        ("450.80.02", "450.80", False),
        ("525.60.13", None, False),
    ],
)
def test_runnable_table(min_driver, host, ok):
    assert runnable(gpu_entry("2.5.1", "12.4", min_driver), host) is ok


def test_cpu_entries_always_runnable(cat):
    for e in cat.entries:
        if e.cuda is None:
            assert runnable(e, None) and runnable(e, "1.0")


def test_bad_driver_string():
    with pytest.raises(InvalidInput):
        runnable(gpu_entry("2.5.1", "12.4", "525.60.13"), "latest")


@pytest.mark.parametrize(
    "host, framework, expect",
    [
        (None, "pytorch", "ds01/base:latest"),  # no GPU: PyTorch's CPU wheels on the lab base
        (None, "tensorflow", "tensorflow/tensorflow:2.19.0"),  # CPU build
        ("470.82.01", "pytorch", "pytorch/pytorch:2.7.1-cuda11.8-cudnn9-runtime"),  # newest CUDA 11
        ("470.82.01", "tensorflow", "tensorflow/tensorflow:2.19.0"),  # 2.19 GPU needs 525: CPU wins
        ("550.54.15", "pytorch", "pytorch/pytorch:2.8.0-cuda12.9-cudnn9-runtime"),
        ("550.54.15", "tensorflow", "tensorflow/tensorflow:2.19.0-gpu"),
        ("550.54.15", "jax", "nvcr.io/nvidia/jax:25.04-py3"),
    ],
)
def test_default_for_shipped(cat, host, framework, expect):
    if expect is None:
        with pytest.raises(InvalidInput) as ei:
            default_for(cat, framework, host)
        assert "versions in the catalog" in (ei.value.hint or "")
    else:
        assert default_for(cat, framework, host).image == expect


def test_default_for_is_newest_runnable():
    c = Catalog(
        entries=[
            gpu_entry("2.8.0", "12.9", "575.51.03"),
            gpu_entry("2.7.0", "12.8", "525.60.13"),
            gpu_entry("2.7.0", "12.8", "525.60.13", variant="devel"),
            gpu_entry("2.7.0", "11.8", "450.80.02"),
            gpu_entry("2.7.0a0", "12.8", "525.60.13", variant="ngc-25.02", image="nvcr.io/nvidia/pytorch:25.02-py3"),
            gpu_entry("2.6.0", "12.6", "450.80.02"),
        ]
    )
    assert default_for(c, "pytorch", "580.1").framework_version == "2.8.0"
    best = default_for(c, "pytorch", "550.54.15")
    assert (best.framework_version, best.cuda, best.variant) == ("2.7.0", "12.8", "runtime")
    best = default_for(c, "torch", "470.82.01")
    assert (best.framework_version, best.cuda) == ("2.7.0", "11.8")
    best = default_for(c, "pytorch", "450.80.02")
    assert best.cuda == "11.8"
    for e in c.entries:
        if runnable(e, "550.54.15"):
            assert Version(e.framework_version) <= Version(default_for(c, "pytorch", "550.54.15").framework_version)


# --------------------------------------------------------------------------- select


def test_select_versions(cat):
    e = select(cat, "pytorch==2.3", "550.54.15")
    assert e.framework_version == "2.3.1" and e.variant == "runtime" and e.cuda == "12.1"
    e = select(cat, "pytorch==2.3.0", "550.54.15")
    assert e.framework_version == "2.3.0"
    e = select(cat, "pytorch == 2.4.1", "470.82.01")
    assert (e.framework_version, e.cuda) == ("2.4.1", "11.8")
    assert select(cat, "tensorflow==2.15", "550.54.15").image == "tensorflow/tensorflow:2.15.0-gpu"
    assert select(cat, "tensorflow==2.15", None).image == "tensorflow/tensorflow:2.15.0"
    assert select(cat, "jax==0.4.33", "550.54.15").image == "nvcr.io/nvidia/jax:24.10-py3"
    assert select(cat, "pytorch", "550.54.15") == default_for(cat, "pytorch", "550.54.15")


def test_select_unknown_version_lists_what_exists(cat):
    with pytest.raises(InvalidInput) as ei:
        select(cat, "pytorch==9.9", "550.54.15")
    assert "pytorch==9.9" in ei.value.message
    assert "2.8.0" in ei.value.hint and "2.5.1" in ei.value.hint


def test_select_not_runnable_says_driver(cat):
    with pytest.raises(InvalidInput) as ei:
        select(cat, "jax==0.4.33", "470.82.01")
    assert "525.60.13" in ei.value.message
    assert "runnable here: 0.5.3 " in ei.value.hint  # only the CPU build runs on that driver


@pytest.mark.parametrize("spec", ["mxnet", "pytorch>=2", "pytorch==", "pytorch==2.x", "", "pytorch==2.3;rm -rf /"])
def test_select_bad_specs(cat, spec):
    with pytest.raises(InvalidInput):
        select(cat, spec, "550.54.15")


def test_parse_framework_spec():
    assert parse_framework_spec("pytorch") == ("pytorch", None)
    assert parse_framework_spec("TF==2.15") == ("tensorflow", (2, 15))
    assert parse_framework_spec("pytorch==2.3.1") == ("pytorch", (2, 3, 1))


# --------------------------------------------------------------------------- loading and merging


def test_admin_entries_are_merged_and_replace_by_image(cat):
    extra = [
        {
            "framework": "pytorch",
            "framework_version": "2.9.0",
            "variant": "runtime",
            "cuda": "12.8",
            "python": "3.12",
            "min_driver": "525.60.13",
            "gpu_archs": ["sm_90"],
            "image": "registry.lab.example/pytorch:2.9.0",
        },
        {**cat.entries[0].model_dump(), "notes": "admin says hi"},
    ]
    merged = load_catalog(extra)
    assert len(merged) == len(cat) + 1
    assert merged.by_image(cat.entries[0].image).notes == "admin says hi"
    assert default_for(merged, "pytorch", "550.54.15").image == "registry.lab.example/pytorch:2.9.0"


@pytest.mark.parametrize(
    "bad",
    [
        {"framework": "caffe"},
        {"framework_version": "two"},
        {"image": "evil\nRUN rm -rf /"},
        {"cuda": None},  # a CPU entry with min_driver/gpu_archs
        {"min_driver": "latest"},
        {"unknown_key": 1},
        {"framework_version": 2.1},  # YAML float, not a string
    ],
)
def test_admin_entry_errors_fail_closed(cat, bad):
    entry = {**cat.entries[0].model_dump(), "image": "registry.lab.example/x:1", **bad}
    with pytest.raises(ConfigError):
        load_catalog([entry])


def test_duplicate_key_refused(cat):
    dup = {**cat.entries[0].model_dump(), "image": "registry.lab.example/copy:1"}
    with pytest.raises(ConfigError, match="repeated"):
        load_catalog([dup])


# --------------------------------------------------------------------------- image policy


@pytest.mark.parametrize(
    "ref, ok",
    [
        ("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", True),
        ("docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", True),
        ("pytorch/pytorch-evil:latest", False),
        ("pytorch/pytorchx", False),
        ("python:3.12-slim", True),
        ("docker.io/library/python:3.12-slim", True),
        ("pythonx:3", False),
        ("nvcr.io/nvidia/pytorch:24.05-py3", True),
        ("nvcr.io/nvidia-evil/pytorch:1", False),
        ("ds01/base:latest", True),
        ("evil.example/ds01/base:latest", False),
        ("ghcr.io/someone/thing:1", False),
        ("python:3.12-slim\nRUN id", False),
        ("", False),
    ],
)
def test_image_allowed_default_prefixes(ref, ok):
    assert image_allowed(ref, ImagesConfig().allowed) is ok


def test_image_allowed_empty_list_refuses_everything():
    assert not image_allowed("python:3.12-slim", [])


def test_check_image_allowed_lists_prefixes():
    allowed = ["ds01/", "python:"]
    check_image_allowed("python:3.12-slim", allowed)
    with pytest.raises(PolicyDenied) as ei:
        check_image_allowed("ghcr.io/x/y:1", allowed)
    assert "ds01/" in ei.value.hint and "python:" in ei.value.hint
    assert ei.value.details["allowed"] == allowed
    with pytest.raises(InvalidInput):
        check_image_allowed("bad ref", allowed)
