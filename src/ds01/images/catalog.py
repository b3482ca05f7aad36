"""The L1 image catalog: pre-built framework images and how one is chosen for a host.

The catalog is package data (``catalog.yaml`` beside this module) merged with the admin's extra
entries from the daemon config. It is pure data plus pure functions: no Docker, no NVML. The
caller supplies the host's NVIDIA driver version (from the GPU inventory, or the simulated one in
config; ``None`` when the host has no GPU).

Contracts:
- ``load_catalog`` fails closed: a malformed shipped or admin catalog raises ``ConfigError``
  (the daemon refuses to start) rather than serving a partial list.
- ``select`` / ``default_for`` raise ``InvalidInput`` naming what exists when nothing matches.
- ``check_image_allowed`` raises ``PolicyDenied`` listing the allowed prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ds01.errors import ConfigError, InvalidInput, PolicyDenied

Framework = Literal["pytorch", "tensorflow", "jax", "python"]
FRAMEWORKS: tuple[str, ...] = ("pytorch", "tensorflow", "jax", "python")

# Names users type that mean a framework we know.
_ALIASES = {"torch": "pytorch", "tf": "tensorflow", "py": "python"}

# A conservative image reference: registry/path[:tag][@digest]. No whitespace or shell/Dockerfile
# metacharacters, so a reference can be written after FROM without any way to add a line.
_IMAGE_RE = re.compile(
    r"^[a-z0-9][a-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_DRIVER_RE = re.compile(r"^\d+(?:\.\d+){0,2}\Z")
_CUDA_RE = re.compile(r"^\d+\.\d+(?:\.\d+)?\Z")
_ARCH_RE = re.compile(r"^sm_\d{2,3}[a-z]?\Z")
_PIP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~*+]*\Z")
_INDEX_RE = re.compile(r"^https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~%-]*)*/?\Z")


def valid_image_ref(ref: str) -> bool:
    """True when ``ref`` is a syntactically safe image reference (length-capped, no whitespace)."""
    return isinstance(ref, str) and len(ref) <= 255 and bool(_IMAGE_RE.match(ref))


def parse_driver(version: str) -> tuple[int, ...]:
    """``"550.54.15"`` → ``(550, 54, 15)``; raises InvalidInput on anything else."""
    v = str(version).strip()
    if not _DRIVER_RE.match(v):
        raise InvalidInput(f"not an NVIDIA driver version: {version!r}", "expected e.g. 550.54.15")
    return tuple(int(p) for p in v.split("."))


class CatalogEntry(BaseModel):
    """One pre-built image. ``cuda``/``min_driver`` are None for CPU-only images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    framework: Framework
    framework_version: str
    variant: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    cuda: str | None = None
    python: str | None = None  # None: unknown (a refreshed tag that does not say it)
    min_driver: str | None = None
    gpu_archs: list[str] = []
    image: str
    source: str = "admin"
    local: bool = False  # built on this host (never pulled), e.g. ds01/base:latest
    default: bool = False  # wins default_for() for its framework while runnable
    notes: str | None = None
    # Installed on top of ``image`` by the generated Dockerfile: a framework's CPU wheels on the
    # lab's base, e.g. ``torch==2.8.0+cpu`` from ``pip_index`` (an extra index URL).
    pip: list[str] = []
    pip_index: str | None = None

    @field_validator("pip")
    @classmethod
    def _pip(cls, v: list[str]) -> list[str]:
        from packaging.requirements import InvalidRequirement, Requirement

        for spec in v:
            try:
                req = Requirement(spec)
            except InvalidRequirement:
                raise ValueError(f"not a pip requirement: {spec!r}") from None
            if req.url or req.marker or not _PIP_RE.match(spec):
                raise ValueError(f"not a plain pip requirement (no URL, marker or spaces): {spec!r}")
        return v

    @field_validator("pip_index")
    @classmethod
    def _index(cls, v: str | None) -> str | None:
        if v is not None and not _INDEX_RE.match(v):
            raise ValueError(f"not an https index URL without credentials: {v!r}")
        return v

    @field_validator("framework_version", "python")
    @classmethod
    def _pep440(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None and info.field_name == "python":
            return v
        try:
            Version(v)
        except InvalidVersion:
            raise ValueError(f"not a parseable version: {v!r}") from None
        return v

    @field_validator("cuda")
    @classmethod
    def _cuda(cls, v: str | None) -> str | None:
        if v is not None and not _CUDA_RE.match(v):
            raise ValueError(f"not a CUDA version: {v!r}")
        return v

    @field_validator("min_driver")
    @classmethod
    def _driver(cls, v: str | None) -> str | None:
        if v is not None and not _DRIVER_RE.match(v):
            raise ValueError(f"not a driver version: {v!r}")
        return v

    @field_validator("gpu_archs")
    @classmethod
    def _archs(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _ARCH_RE.match(a)]
        if bad:
            raise ValueError(f"not GPU architectures: {bad}")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not valid_image_ref(v):
            raise ValueError(f"not a valid image reference: {v!r}")
        return v

    @model_validator(mode="after")
    def _gpu_fields(self) -> "CatalogEntry":
        if self.cuda is None and (self.min_driver or self.gpu_archs):
            raise ValueError("a CPU-only entry (cuda: null) has no min_driver or gpu_archs")
        if self.cuda is not None and self.min_driver is None:
            raise ValueError("a CUDA entry needs min_driver")
        return self

    @property
    def version(self) -> Version:
        return Version(self.framework_version)

    @property
    def gpu(self) -> bool:
        return self.cuda is not None

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.framework, self.framework_version, self.cuda, self.variant)

    @property
    def ident(self) -> tuple[str, tuple[str, ...]]:
        """What makes an entry unique besides ``key``: its image and what is installed on top."""
        return (self.image, tuple(self.pip))

    @property
    def label(self) -> str:
        """Short human form: ``pytorch 2.5.1 (cuda 12.4, runtime)``."""
        hw = f"cuda {self.cuda}" if self.cuda else "cpu"
        return f"{self.framework} {self.framework_version} ({hw}, {self.variant})"


class Catalog(BaseModel):
    """The merged catalog. Entries keep file order; lookups sort as needed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: list[CatalogEntry]

    @model_validator(mode="after")
    def _unique(self) -> "Catalog":
        seen_keys: set[tuple[Any, ...]] = set()
        seen_images: set[tuple[str, tuple[str, ...]]] = set()
        dup_keys, dup_images = [], []
        for e in self.entries:
            if e.key in seen_keys:
                dup_keys.append(e.label)
            if e.ident in seen_images:
                dup_images.append(e.image + "".join(f" +{p}" for p in e.pip))
            seen_keys.add(e.key)
            seen_images.add(e.ident)
        problems = []
        if dup_keys:
            problems.append(f"repeated (framework, version, cuda, variant): {', '.join(dup_keys)}")
        if dup_images:
            problems.append(f"repeated images: {', '.join(dup_images)}")
        defaults: dict[str, int] = {}
        for e in self.entries:
            if e.default:
                defaults[e.framework] = defaults.get(e.framework, 0) + 1
        many = sorted(f for f, n in defaults.items() if n > 1)
        if many:
            problems.append(f"more than one default entry for: {', '.join(many)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def for_framework(self, framework: str) -> list[CatalogEntry]:
        return [e for e in self.entries if e.framework == framework]

    def by_image(self, image: str) -> CatalogEntry | None:
        for e in self.entries:
            if e.image == image:
                return e
        return None

    def __len__(self) -> int:
        return len(self.entries)


# --------------------------------------------------------------------------- loading


@lru_cache(maxsize=1)
def _packaged_entries() -> tuple[dict[str, Any], ...]:
    import yaml

    text = resources.files("ds01.images").joinpath("catalog.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ConfigError("the packaged image catalog (ds01/images/catalog.yaml) has no 'entries' list")
    return tuple(data["entries"])


def _validate_entries(raw: Iterable[Any], where: str) -> list[CatalogEntry]:
    out: list[CatalogEntry] = []
    for i, item in enumerate(raw):
        if isinstance(item, CatalogEntry):
            out.append(item)
            continue
        try:
            out.append(CatalogEntry.model_validate(item))
        except ValidationError as e:
            msgs = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: "
                f"{'unknown key (misspelt?)' if err['type'] == 'extra_forbidden' else err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"{where}: catalog entry {i}: {msgs}") from None
    return out


def load_catalog(extra_entries: Iterable[Mapping[str, Any] | CatalogEntry] | None = None) -> Catalog:
    """The shipped catalog merged with the admin's ``extra_entries``.

    An admin entry whose ``image`` (and ``pip``) equals a shipped one replaces it (so admins can
    correct or re-flag an entry); other admin entries are appended. Raises ConfigError on any
    invalid entry or on duplicates after merging.
    """
    shipped = _validate_entries(_packaged_entries(), "ds01/images/catalog.yaml")
    extra = _validate_entries(extra_entries or (), "config images catalog")
    extra += _overlay_entries(shipped + extra)
    by_image = {e.ident: e for e in extra}
    merged = [by_image.pop(e.ident, e) for e in shipped]
    # Keep the admin's own order for entries that did not replace a shipped one.
    merged += [e for e in extra if e.ident in by_image]
    try:
        return Catalog(entries=merged)
    except ValidationError as e:
        raise ConfigError(
            "invalid image catalog: " + "; ".join(str(err["msg"]) for err in e.errors()),
            "fix the catalog entries in the config (images must be unique)",
        ) from None


def shipped_entries() -> list[CatalogEntry]:
    """The packaged catalog alone (what a refresh compares against)."""
    return _validate_entries(_packaged_entries(), "ds01/images/catalog.yaml")


def _overlay_entries(present: Sequence[CatalogEntry]) -> list[CatalogEntry]:
    """The refresh overlay's entries not ``present`` (``catalog_refresh.overlay_entries``)."""
    from ds01.images.catalog_refresh import overlay_entries

    keys, idents = {e.key for e in present}, {e.ident for e in present}
    return [e for e in overlay_entries(CatalogEntry.model_validate, ValidationError)
            if e.key not in keys and e.ident not in idents]


# --------------------------------------------------------------------------- selection


def runnable(entry: CatalogEntry, driver_version: str | None) -> bool:
    """Can a host with this NVIDIA driver run ``entry``? CPU entries always can; GPU entries need
    a driver (``None`` = no GPU) at least ``min_driver``."""
    if entry.cuda is None:
        return True
    if driver_version is None:
        return False
    assert entry.min_driver is not None  # enforced by CatalogEntry
    return parse_driver(driver_version) >= parse_driver(entry.min_driver)


def fit(entry: CatalogEntry, driver_version: str | None) -> str | None:
    """How ``entry`` runs on a host with this driver: ``"gpu"`` (a CUDA image, the driver is new
    enough), ``"cpu"`` (a CPU-only image), ``"cpu-only-here"`` (a CUDA image on a host without
    any NVIDIA driver: the framework still runs, on the CPU), None (the driver is too old for
    the image's CUDA: refused)."""
    if entry.cuda is None:
        return "cpu"
    if driver_version is None:
        return "cpu-only-here"
    return "gpu" if runnable(entry, driver_version) else None


def runs_here(entry: CatalogEntry, driver_version: str | None) -> bool:
    """Can the image run here at all (on the GPU or, where there is no driver, on the CPU)?"""
    return fit(entry, driver_version) is not None


def _usable(entries: Sequence[CatalogEntry], driver_version: str | None) -> list[CatalogEntry]:
    """The entries to choose from here: on a host without a driver the CPU entries, and only
    when there are none the CUDA images (which then run on the CPU); elsewhere those that run,
    the lab-base CPU builds (``pip`` entries) only when nothing else does."""
    if driver_version is None:
        cpu = [e for e in entries if e.cuda is None]
        return cpu or list(entries)
    ok = [e for e in entries if runnable(e, driver_version)]
    return [e for e in ok if not e.pip] or ok


_VARIANT_RANK = {"runtime": 5, "gpu": 5, "slim": 4, "local": 4, "cpu": 2, "devel": 1}


def _preference(entry: CatalogEntry) -> tuple[Any, ...]:
    """Sort key, larger is better: newest framework version (final releases above NVIDIA's
    pre-release builds of the same version), then GPU over CPU, then the lean variant
    (runtime before NGC before devel), then the newest CUDA."""
    cuda = Version(entry.cuda) if entry.cuda else Version("0")
    variant_rank = 3 if entry.variant.startswith("ngc-") else _VARIANT_RANK.get(entry.variant, 0)
    return (entry.version, entry.gpu, variant_rank, cuda)


def _resolve_framework(name: str) -> str:
    f = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if f not in FRAMEWORKS:
        raise InvalidInput(
            f"unknown framework {name!r}",
            f"use one of: {', '.join(FRAMEWORKS)} (optionally with ==VERSION, e.g. pytorch==2.3)",
        )
    return f


def default_for(catalog: Catalog, framework: str, driver_version: str | None) -> CatalogEntry:
    """The default image for ``framework`` on this host: an entry flagged ``default`` if it runs
    here, else the newest runnable entry (see ``_preference``)."""
    f = _resolve_framework(framework)
    entries = catalog.for_framework(f)
    ok = _usable(entries, driver_version)
    flagged = [e for e in ok if e.default]
    if flagged:
        return flagged[0]
    if not ok:
        raise InvalidInput(
            f"no {f} image in the catalog runs on this host "
            f"(driver {driver_version or 'none: no GPU'})",
            _exists_hint(entries, f),
        )
    return max(ok, key=_preference)


_SPEC_RE = re.compile(r"^\s*([A-Za-z]+)\s*(?:==\s*([0-9]+(?:\.[0-9]+)*)\s*)?\Z")


def parse_framework_spec(spec: str) -> tuple[str, tuple[int, ...] | None]:
    """``"pytorch"`` → ``("pytorch", None)``; ``"pytorch==2.3"`` → ``("pytorch", (2, 3))``."""
    m = _SPEC_RE.match(spec or "")
    if not m:
        raise InvalidInput(
            f"cannot read framework {spec!r}",
            "write FRAMEWORK or FRAMEWORK==VERSION, e.g. pytorch, pytorch==2.3, tensorflow==2.15.0",
        )
    f = _resolve_framework(m.group(1))
    ver = tuple(int(p) for p in m.group(2).split(".")) if m.group(2) else None
    return f, ver


def _matches(entry: CatalogEntry, release: tuple[int, ...]) -> bool:
    """``==2.3`` matches every 2.3.x (and NVIDIA's 2.3.0a0 builds); ``==2.3.1`` only 2.3.1."""
    have = entry.version.release
    have = have + (0,) * max(0, len(release) - len(have))
    return have[: len(release)] == release


def select(catalog: Catalog, framework_spec: str, driver_version: str | None) -> CatalogEntry:
    """Pick the image for ``framework_spec`` (``pytorch`` | ``pytorch==2.3`` | ``pytorch==2.3.1``)
    on a host with ``driver_version``. Raises InvalidInput listing the versions that exist (and
    which of them run here) when nothing matches."""
    f, release = parse_framework_spec(framework_spec)
    if release is None:
        return default_for(catalog, f, driver_version)
    entries = catalog.for_framework(f)
    matching = [e for e in entries if _matches(e, release)]
    want = ".".join(str(p) for p in release)
    if not matching:
        raise InvalidInput(f"the catalog has no {f}=={want}", _exists_hint(entries, f))
    ok = _usable(matching, driver_version)
    if not ok:
        need = min((e for e in matching if e.min_driver), key=lambda e: parse_driver(e.min_driver or "0"))
        raise InvalidInput(
            f"no {f}=={want} image runs on this host (driver {driver_version or 'none: no GPU'}); "
            f"the oldest driver any of them needs is {need.min_driver}",
            _exists_hint(entries, f, driver_version, with_runnable=True),
        )
    return max(ok, key=_preference)


def _exists_hint(
    entries: Sequence[CatalogEntry], framework: str, driver_version: str | None = None, *, with_runnable: bool = False
) -> str:
    if not entries:
        return f"the catalog has no {framework} images; 'ds01 image-list --catalog' shows what exists"
    versions = sorted({e.version for e in entries}, reverse=True)
    shown = ", ".join(str(v) for v in versions[:15]) + (", ..." if len(versions) > 15 else "")
    hint = f"{framework} versions in the catalog: {shown}"
    if with_runnable:
        here = sorted({e.version for e in entries if runs_here(e, driver_version)}, reverse=True)
        hint += "; runnable here: " + (", ".join(str(v) for v in here[:15]) or "none")
    return hint + " ('ds01 image-list --catalog' lists them all)"


# --------------------------------------------------------------------------- image policy


# Every name Docker Hub answers to. The engine itself maps only ``index.docker.io``; the others are
# mapped here too so a policy check can never read them as a different registry (fail closed).
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
HUB = "docker.io"


class ImageRef:
    """An image reference normalised as the engine does: ``domain`` (lowercased; every Docker Hub
    spelling is ``docker.io``), ``path`` (``library/`` added to single-name Hub repositories),
    ``tag`` (None when absent) and ``digest`` (``sha256:…`` or None).

    The ONE normaliser for every image check (``image_allowed``, ``user_image_owner``,
    ``ImageService.check_use``); never compare reference text directly."""

    __slots__ = ("domain", "path", "tag", "digest")

    def __init__(self, domain: str, path: str, tag: str | None, digest: str | None):
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def canonical(self) -> str:
        """``docker.io/library/python:latest``; with a digest the tag is dropped (the engine
        resolves a name with both by its digest)."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    def ds01_parts(self) -> list[str] | None:
        """The path below ``ds01/`` for a Hub reference in DS01's namespace (compared
        case-insensitively), else None: ``[]``… ``["base"]`` (a lab image), ``["alice", "proj"]``
        (a per-user image), anything longer (refused by the checks)."""
        parts = self.path.split("/")
        if self.domain == HUB and parts[0].lower() == "ds01":
            return parts[1:]
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageRef) and self.canonical == other.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __repr__(self) -> str:
        return f"ImageRef({self.canonical!r})"


def _split_domain(name: str) -> tuple[str, str]:
    """(domain, remainder) as the engine splits a name: the first component is a registry host
    when it contains ``.`` or ``:``, is ``localhost`` or has an uppercase letter."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain = first.lower()
        return (HUB if domain in _HUB_HOSTS else domain), rest
    return HUB, name


def normalize_ref(ref: str) -> ImageRef:
    """Parse ``ref`` into an :class:`ImageRef` (see there). Raises InvalidInput for text that is
    no image reference at all (empty, whitespace, several ``@``)."""
    s = ref.strip() if isinstance(ref, str) else ""
    if not s or any(c.isspace() for c in s) or s.count("@") > 1:
        raise InvalidInput(f"not a valid image reference: {ref!r}", "e.g. python:3.12-slim")
    name, _, digest = s.partition("@")
    tag = None
    i = name.rfind(":")
    if i > name.rfind("/"):
        name, tag = name[:i], name[i + 1:]
    domain, path = _split_domain(name)
    if not path:
        raise InvalidInput(f"not a valid image reference: {ref!r}", "e.g. python:3.12-slim")
    if domain == HUB and "/" not in path:
        path = "library/" + path
    return ImageRef(domain, path, tag, digest or None)


def user_image_owner(ref: str) -> str | None:
    """For a per-user image reference ``ds01/<user>/<project>[:tag]`` (any spelling the engine
    accepts: ``docker.io/``, ``index.docker.io/``, digests …) the ``<user>`` part, else None
    (``ds01/base:latest`` is a lab image, not a per-user one). Deeper ``ds01/a/b/c`` paths
    also answer ``a``: they are in the per-user namespace and never a lab image."""
    try:
        parts = normalize_ref(ref).ds01_parts()
    except InvalidInput:
        return None
    return parts[0] if parts is not None and len(parts) >= 2 else None


def _normalize_prefix(prefix: str) -> str:
    """An admin's allowed prefix in the normalised spelling (``python:`` ->
    ``docker.io/library/python:``, ``ds01/`` -> ``docker.io/ds01/``, ``nvcr.io/nvidia/`` as is)."""
    p = prefix.strip()
    if not p:
        return ""
    domain, rest = _split_domain(p)
    if domain != HUB:
        return f"{domain}/{rest}"
    if rest and "/" not in rest:  # a single name (python, python:, ubuntu@): an official image
        rest = "library/" + rest
    return f"{HUB}/{rest}"


def image_allowed(ref: str, allowed_prefixes: Sequence[str]) -> bool:
    """Is ``ref`` inside one of the admin's allowed prefixes?

    Both sides are normalised (:func:`normalize_ref`), so every spelling of a Hub image
    (``python:3``, ``docker.io/library/python:3``, ``index.docker.io/…``) compares equal, and a
    reference without tag is compared as ``:latest``. A prefix ending in ``/``, ``:`` or ``@``
    matches as text. A prefix ending in a name character must end at a name boundary, so
    ``pytorch/pytorch`` allows ``pytorch/pytorch:2.5.1-…`` but not ``pytorch/pytorch-evil:x``.
    Invalid references and an empty prefix list are refused (fail closed)."""
    if not valid_image_ref(ref):
        return False
    try:
        r = normalize_ref(ref).canonical
    except InvalidInput:
        return False
    for prefix in allowed_prefixes:
        p = _normalize_prefix(prefix)
        if not p:
            continue
        if p[-1] in "/:@":
            if r.startswith(p):
                return True
        elif r == p or (r.startswith(p) and r[len(p)] in ":@/"):
            return True
    return False


def check_image_allowed(ref: str, allowed_prefixes: Sequence[str]) -> None:
    """Raise PolicyDenied (with the allowed list) unless ``image_allowed``."""
    if image_allowed(ref, allowed_prefixes):
        return
    if not valid_image_ref(ref):
        raise InvalidInput(f"not a valid image reference: {ref!r}", "e.g. pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime")
    shown = ", ".join(allowed_prefixes) if allowed_prefixes else "(none: the admin allows no images)"
    raise PolicyDenied(
        f"image {ref} is not from an allowed registry or prefix",
        f"allowed prefixes: {shown}; pick a catalog image ('ds01 image-list --catalog') or ask an admin",
        {"image": ref, "allowed": list(allowed_prefixes)},
    )
