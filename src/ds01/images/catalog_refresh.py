"""Catalog refresh (issue 17): tag names → catalog entries, the overlay file, the diff. Pure except
``read_overlay``/``write_overlay``.

Families are the catalog's sources (``catalog.yaml``'s header documents each tag shape). A tag is
kept when it matches its family's pattern; what the tag says (framework version, CUDA, variant,
Python for ``python:``) is parsed from it, and what it does not say is ``None`` (unknown, shown as
such), never guessed. ``min_driver`` is the catalog's documented rule for the CUDA major (a CUDA
image cannot be an entry without it). A tag whose framework version the tag does not say (NVIDIA's
``yy.mm`` releases), or a GPU tag that does not say its CUDA (``tensorflow:X-gpu``), cannot be
chosen safely: it is listed as *unknown* in the overlay, never made selectable.

The overlay (``<state>/catalog-overlay.yaml``, written by the daemon as root) holds only tags the
shipped catalog lacks; ``catalog.load_catalog`` merges its ``entries`` after the shipped ones.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OVERLAY_NAME = "catalog-overlay.yaml"
log = logging.getLogger("ds01.catalog")


@dataclass(frozen=True)
class Family:
    name: str  # what --family takes
    source: str  # catalog.yaml's ``source``
    framework: str
    repository: str  # as in an image reference (the registry name included when not Docker Hub)
    pattern: re.Pattern[str]


# The tag shapes of catalog.yaml's header, one family per source that is pulled from a registry.
FAMILIES: tuple[Family, ...] = (
    Family("pytorch", "dockerhub-pytorch", "pytorch", "pytorch/pytorch",
           re.compile(r"^(?P<version>\d+\.\d+\.\d+)-cuda(?P<cuda>\d+\.\d+(?:\.\d+)?)-cudnn(?P<cudnn>\d+)"
                      r"-(?P<variant>runtime|devel)$")),
    Family("ngc-pytorch", "ngc-pytorch", "pytorch", "nvcr.io/nvidia/pytorch",
           re.compile(r"^(?P<release>\d{2}\.\d{2})-py3$")),
    Family("tensorflow", "dockerhub-tensorflow", "tensorflow", "tensorflow/tensorflow",
           re.compile(r"^(?P<version>\d+\.\d+\.\d+)(?:-(?P<variant>gpu|gpu-jupyter))?$")),
    Family("ngc-tensorflow", "ngc-tensorflow", "tensorflow", "nvcr.io/nvidia/tensorflow",
           re.compile(r"^(?P<release>\d{2}\.\d{2})-tf2-py3$")),
    Family("ngc-jax", "ngc-jax", "jax", "nvcr.io/nvidia/jax", re.compile(r"^(?P<release>\d{2}\.\d{2})-py3$")),
    Family("python", "dockerhub-python", "python", "python",
           re.compile(r"^(?P<version>\d+\.\d+(?:\.\d+)?)-slim$")),
)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)

# catalog.yaml "Field rules": CUDA minor-version compatibility minimum per CUDA major.
_MIN_DRIVER = {"11.0": "450.36.06", "11": "450.80.02", "12": "525.60.13"}


def families(names: Iterable[str] | None = None) -> list[Family]:
    """The families to refresh: all, or those named (a framework name means all its families)."""
    if not names:
        return list(FAMILIES)
    out: list[Family] = []
    for n in names:
        n = n.strip().lower()
        hit = [f for f in FAMILIES if f.name == n or f.framework == n]
        if not hit:
            raise ValueError(f"unknown catalog family {n!r} (one of: {', '.join(FAMILY_NAMES)})")
        out += [f for f in hit if f not in out]
    return out


def min_driver_for(cuda: str) -> str | None:
    major_minor = ".".join(cuda.split(".")[:2])
    return _MIN_DRIVER.get(major_minor) or _MIN_DRIVER.get(cuda.split(".")[0])


def parse_tag(family: Family, tag: str) -> dict[str, Any] | None:
    """What ``tag`` says, as a catalog entry (dict) or an ``{"unknown": reason}`` record; None when
    the tag is not of the family's shape (skipped: ``latest``, nightlies, other builds)."""
    m = family.pattern.match(tag)
    if not m:
        return None
    g = m.groupdict()
    image = f"{family.repository}:{tag}"
    base = {"framework": family.framework, "image": image, "source": family.source}
    if g.get("release"):
        return {**base, "variant": f"ngc-{g['release']}", "framework_version": None, "cuda": None,
                "python": None, "unknown": "the tag does not say the framework version (see the NGC release notes)"}
    version = g["version"]
    if family.framework == "python":
        return {**base, "framework_version": version, "variant": "slim", "cuda": None, "python": version,
                "min_driver": None, "gpu_archs": []}
    if family.framework == "tensorflow":
        if g.get("variant"):
            return {**base, "framework_version": version, "variant": g["variant"], "cuda": None, "python": None,
                    "unknown": "the tag does not say its CUDA version"}
        return {**base, "framework_version": version, "variant": "cpu", "cuda": None, "python": None,
                "min_driver": None, "gpu_archs": []}
    cuda = g["cuda"]
    drv = min_driver_for(cuda)
    if drv is None:
        return {**base, "framework_version": version, "variant": g["variant"], "cuda": cuda, "python": None,
                "unknown": f"no known minimum driver for CUDA {cuda}"}
    return {**base, "framework_version": version, "variant": g["variant"], "cuda": cuda, "python": None,
            "min_driver": drv, "gpu_archs": []}


def _key(e: Mapping[str, Any]) -> tuple[Any, ...]:
    return (e["framework"], e["framework_version"], e.get("cuda"), e["variant"])


def build_overlay(found: Mapping[str, Sequence[str]], known: Iterable[Mapping[str, Any]],
                  previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The new overlay from ``found`` (family name → tags listed now), the shipped catalog's
    entries (``known``: dicts with image/framework/framework_version/cuda/variant) and the previous
    overlay (families not refreshed now keep their part). Only tags the shipped catalog lacks are
    kept; of two tags with one (framework, version, cuda, variant) the first in tag order wins (the
    others are reported as ``duplicates``)."""
    fams = {f.name: f for f in FAMILIES}
    shipped = list(known)
    images = {e["image"] for e in shipped}
    keys = {_key(e) for e in shipped}
    refreshed_sources = {fams[n].source for n in found}
    prev = previous or {}
    entries = [e for e in prev.get("entries") or () if e.get("source") not in refreshed_sources]
    unknown = [e for e in prev.get("unknown") or () if e.get("source") not in refreshed_sources]
    keys |= {_key(e) for e in entries}
    images |= {e["image"] for e in entries} | {e["image"] for e in unknown}
    duplicates: list[str] = []
    for name, tags in found.items():
        fam = fams[name]
        for tag in sorted(set(tags)):
            rec = parse_tag(fam, tag)
            if rec is None or rec["image"] in images:
                continue
            images.add(rec["image"])
            if "unknown" in rec:
                unknown.append(rec)
            elif _key(rec) in keys:
                duplicates.append(rec["image"])
            else:
                keys.add(_key(rec))
                entries.append(rec)
    return {"entries": entries, "unknown": unknown, "duplicates": duplicates}


def diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, list[str]]:
    """Images added to / removed from the overlay (selectable entries and unknown ones)."""
    def imgs(o: Mapping[str, Any] | None, part: str) -> set[str]:
        return {e["image"] for e in (o or {}).get(part) or ()}

    return {"added": sorted(imgs(new, "entries") - imgs(old, "entries")),
            "removed": sorted(imgs(old, "entries") - imgs(new, "entries")),
            "unknown_added": sorted(imgs(new, "unknown") - imgs(old, "unknown")),
            "unknown_removed": sorted(imgs(old, "unknown") - imgs(new, "unknown"))}


def read_overlay(path: str) -> dict[str, Any] | None:
    """The overlay file, or None when there is none. Raises ValueError on a file that is not one."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not YAML: {e}") from None
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("entries", []), list):
        raise ValueError(f"{path}: not a catalog overlay (no 'entries' list)")
    return data


def write_overlay(path: str, overlay: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Atomically (temp file + rename) write the overlay, mode 0644 (every user's catalog reads it)."""
    import yaml

    doc = {**meta, "entries": list(overlay["entries"]), "unknown": list(overlay["unknown"])}
    text = ("# Written by 'ds01 admin catalog refresh': tags the shipped catalog lacks. Do not edit;\n"
            "# refresh again (entries with python: null say it is unknown; 'unknown' are listed only).\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200))
    from ds01.atomic_file import write_atomic

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, text, 0o644)


_overlay: dict[str, Any] = {"path": None, "stamp": None, "entries": ()}


def set_overlay_path(path: str | None) -> None:
    """Where the overlay is (the daemon sets ``<state>/catalog-overlay.yaml``); None = none."""
    _overlay.update(path=path, stamp=None, entries=())


def overlay_path() -> str | None:
    return _overlay["path"]


def overlay_entries(validate: Any, invalid: type[Exception]) -> tuple[Any, ...]:
    """The overlay's entries, each through ``validate`` (``CatalogEntry.model_validate``), re-read
    only when the file changes. Machine-written, so never fatal: a bad file or entry is left out
    and logged."""
    path = _overlay["path"]
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    if st is None:
        return ()
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    if stamp != _overlay["stamp"]:
        try:
            raw = list((read_overlay(path) or {}).get("entries") or [])
        except (OSError, ValueError) as e:
            log.warning("catalog overlay %s ignored: %s", path, e)
            raw = []
        entries = []
        for item in raw:
            try:
                entries.append(validate(item))
            except invalid as e:
                name = item.get("image") if isinstance(item, dict) else item
                log.warning("catalog overlay entry %s ignored: %s", name, e)
        _overlay.update(stamp=stamp, entries=tuple(entries))
    return _overlay["entries"]
