"""Generate and edit a project's Dockerfile (pure text in, text out; no I/O).

The generated file is the user's: ``image-create`` writes it once and never overwrites it
without ``--force``. DS01 afterwards touches only the block between the two marker lines

    # >>> ds01 managed: packages >>>
    # <<< ds01 managed: packages <<<

which holds the apt and pip package lists (``image-update --add/--add-apt`` rewrites it). The
lists are kept in two comment lines (``# apt: …`` / ``# pip: …``) that are the source of truth;
the RUN lines in the block are regenerated from them, so a hand edit inside the block is replaced
and a hand edit outside it is never touched.

Safety: every package name is validated (pip: a PEP 508 requirement without URL or markers;
apt: ``^[a-z0-9][a-z0-9+.-]+$``), the base image must be a plain image reference, and the
requirements path a plain relative path, so nothing a user passes can add a Dockerfile line or
shell syntax.

Build-time CA bundle / pip index (admin config ``build``): the daemon passes them as build
arguments, never as files in the build context:
- ``DS01_CA_PEM`` carries the PEM text. Each installing RUN writes it to /tmp, points pip,
  requests and apt at it, and deletes it *in the same RUN*, so it is never part of any layer's
  filesystem. (COPYing the file and deleting it later would not do: the COPY layer keeps it.) The
  value does show in ``docker history`` metadata; a CA certificate is public, so that is harmless.
- ``PIP_INDEX_URL`` / ``PIP_EXTRA_INDEX_URL`` / ``PIP_TRUSTED_HOST`` are declared ARGs that pip
  reads from the environment; being ARGs they are not in the image's ENV. They are visible in
  ``docker history``, so an index URL must not embed credentials.
- Proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY`` …) are Docker's predefined build
  arguments: the daemon passes them, and they are deliberately *not* declared here, because Docker
  keeps undeclared predefined proxy arguments out of ``docker history``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, field_validator

from ds01.errors import InvalidInput
from ds01.images.catalog import valid_image_ref
from ds01.images.dockerfile_text import content_hash as content_hash  # re-exported

BEGIN_MARKER = "# >>> ds01 managed: packages >>>"
END_MARKER = "# <<< ds01 managed: packages <<<"
# The requirements file and the project files it names (ds01.images.requirements), regenerated
# from requirements.txt by image-create/image-update/project-launch (sync_requirements).
REQ_BEGIN = "# >>> ds01 managed: requirements >>>"
REQ_END = "# <<< ds01 managed: requirements <<<"
# project paths the build copies: no spaces, quotes or shell/Dockerfile syntax
_INPUT_RE = re.compile(r"^(\.|[A-Za-z0-9_][A-Za-z0-9_.+@=,~-]*(/[A-Za-z0-9_][A-Za-z0-9_.+@=,~-]*)*)\Z")
_INDEX_RE = re.compile(r"^https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~%-]*)*/?\Z")

_APT_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+\Z")
# What a managed pip requirement may contain once normalised by packaging: names, extras,
# version specifiers. No spaces, quotes, ';' (markers) or '@' (URLs).
_PIP_SAFE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~*+]*\Z")
_REQ_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*\Z")
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+= -]{0,127}\Z")

_MARKER_HINT = (
    "put the two marker lines '# >>> ds01 managed: packages >>>' and "
    "'# <<< ds01 managed: packages <<<' back (after FROM), or regenerate the file with "
    "'ds01 image-create <project> --force'"
)


@dataclass(frozen=True)
class Preset:
    description: str
    pip: tuple[str, ...]
    apt: tuple[str, ...] = ()


# Framework-neutral on purpose: no torch/torchvision/tensorflow pins here, because pip would
# replace the framework build the base image ships (and its CUDA) with a PyPI one.
PRESETS: dict[str, Preset] = {
    "cv": Preset(
        "computer vision: OpenCV (headless), Pillow, scikit-image, albumentations",
        ("opencv-python-headless", "pillow", "scikit-image", "albumentations", "matplotlib"),
        ("libglib2.0-0",),
    ),
    "nlp": Preset(
        "NLP: Hugging Face transformers/datasets/tokenizers, sentencepiece, evaluate, nltk",
        ("transformers", "datasets", "tokenizers", "sentencepiece", "evaluate", "nltk"),
    ),
    "rl": Preset(
        "reinforcement learning: Gymnasium, Stable-Baselines3 (needs PyTorch), TensorBoard",
        ("gymnasium", "stable-baselines3", "tensorboard"),
    ),
    "tabular": Preset(
        "tabular data: pandas, scikit-learn, XGBoost, LightGBM, pyarrow, seaborn",
        ("pandas", "scikit-learn", "xgboost", "lightgbm", "pyarrow", "matplotlib", "seaborn"),
    ),
    "audio": Preset(
        "audio: librosa, soundfile (libsndfile), ffmpeg",
        ("librosa", "soundfile"),
        ("libsndfile1", "ffmpeg"),
    ),
    "llm": Preset(
        "LLM fine-tuning (PyTorch): transformers, accelerate, PEFT, TRL, datasets, safetensors",
        ("transformers", "accelerate", "peft", "trl", "datasets", "safetensors", "sentencepiece"),
    ),
}


# --------------------------------------------------------------------------- validation


def validate_apt(name: str) -> str:
    """Return ``name`` if it is a Debian package name, else raise InvalidInput."""
    if not isinstance(name, str) or not _APT_RE.match(name) or len(name) > 128:
        raise InvalidInput(
            f"not a valid apt package name: {name!r}",
            "apt package names are lowercase letters, digits and + . - (e.g. libgl1, build-essential)",
        )
    return name


def validate_pip(spec: str) -> str:
    """Normalise a pip requirement (``numpy>=1.26``, ``transformers[torch]==4.44.2``) and return
    it; raise InvalidInput for anything else (URLs, environment markers, options, spaces that
    would survive normalisation)."""
    if not isinstance(spec, str) or len(spec) > 200 or "\n" in spec or "\r" in spec:
        raise InvalidInput(f"not a valid pip requirement: {spec!r}")
    try:
        req = Requirement(spec.strip())
    except InvalidRequirement as e:
        raise InvalidInput(
            f"not a valid pip requirement: {spec!r} ({e})",
            "write NAME or NAME==VERSION, e.g. numpy or 'transformers>=4.40'",
        ) from None
    if req.url or req.marker:
        raise InvalidInput(
            f"pip requirement {spec!r} uses a URL or environment marker",
            "put such lines in your requirements file (--requirements) instead",
        )
    norm = str(req)
    if not _PIP_SAFE_RE.match(norm):
        raise InvalidInput(f"not a valid pip requirement: {spec!r}")
    return norm


def validate_input(path: str) -> str:
    """A project path the build copies (``wheels/x.whl``, ``pkg``, ``.``); InvalidInput for
    anything a Dockerfile line could not carry as one plain word."""
    p = path.removeprefix("./") if path != "./" else "."
    if not isinstance(path, str) or len(p) > 255 or not _INPUT_RE.match(p) or ".." in p.split("/"):
        raise InvalidInput(f"cannot copy {path!r} into the build: DS01 copies plain relative paths only",
                           "rename it to letters, digits and _ . + - (no spaces or quotes)")
    return p


def _pip_name(spec: str) -> str:
    return canonicalize_name(Requirement(spec).name)


def _merge_pip(current: Iterable[str], add: Iterable[str], remove: Iterable[str] = ()) -> list[str]:
    """Keep order; a re-added name replaces the old spec in place (e.g. a new pin)."""
    out: list[str] = [validate_pip(s) for s in current]
    drop = {canonicalize_name(Requirement(validate_pip(r)).name) for r in remove}
    out = [s for s in out if _pip_name(s) not in drop]
    for s in add:
        s = validate_pip(s)
        names = [_pip_name(x) for x in out]
        n = _pip_name(s)
        if n in names:
            out[names.index(n)] = s
        else:
            out.append(s)
    return out


def _merge_apt(current: Iterable[str], add: Iterable[str], remove: Iterable[str] = ()) -> list[str]:
    drop = {validate_apt(r) for r in remove}
    out = [validate_apt(a) for a in current if a not in drop]
    for a in add:
        if validate_apt(a) not in out:
            out.append(a)
    return out


# --------------------------------------------------------------------------- spec and rendering


class DockerfileSpec(BaseModel):
    """What ``image-create`` asks for. Validated on construction (InvalidInput via
    ``from_request`` for API callers; pydantic ValidationError if built directly)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_image: str
    apt_packages: tuple[str, ...] = ()
    pip_packages: tuple[str, ...] = ()
    # Path relative to the workspace (= build context), e.g. "requirements.txt".
    requirements_file: str | None = None
    preset: str | None = None
    project: str
    framework: str | None = None  # informational label, e.g. "pytorch 2.5.1"
    # project files the requirements file names (ds01.images.requirements), itself included
    requirements_inputs: tuple[str, ...] = ()
    # the catalog entry's packages on top of the base (a framework's CPU wheels) and their index
    framework_pip: tuple[str, ...] = ()
    framework_index: str | None = None
    # Debian packages installed when the base lacks them (the admin's images.tools)
    tools: tuple[str, ...] = ()

    @field_validator("requirements_inputs")
    @classmethod
    def _inputs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_input(p) for p in v)

    @field_validator("framework_pip")
    @classmethod
    def _fw_pip(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_merge_pip([], v))

    @field_validator("framework_index")
    @classmethod
    def _fw_index(cls, v: str | None) -> str | None:
        if v is not None and not _INDEX_RE.match(v):
            raise ValueError(f"not an https index URL: {v!r}")
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_merge_apt([], v))

    @field_validator("base_image")
    @classmethod
    def _base(cls, v: str) -> str:
        if not valid_image_ref(v):
            raise ValueError(f"not a valid image reference: {v!r}")
        return v

    @field_validator("apt_packages")
    @classmethod
    def _apt(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_merge_apt([], v))

    @field_validator("pip_packages")
    @classmethod
    def _pip(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_merge_pip([], v))

    @field_validator("requirements_file")
    @classmethod
    def _req(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.removeprefix("./")
        parts = v.split("/")
        if not _REQ_PATH_RE.match(v) or ".." in parts or len(v) > 255:
            raise ValueError(
                f"requirements file must be a plain path inside the project (letters, digits, _ . -): {v!r}"
            )
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; known: {', '.join(PRESETS)}")
        return v

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not _PROJECT_RE.match(v):
            raise ValueError(f"not a valid project name: {v!r}")
        return v

    @field_validator("framework")
    @classmethod
    def _framework(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not _LABEL_RE.match(v):
            raise ValueError(f"not a valid framework label: {v!r}")
        return v

    @classmethod
    def from_request(cls, **kwargs: object) -> "DockerfileSpec":
        """Build a spec, turning validation problems into one InvalidInput."""
        from pydantic import ValidationError

        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except InvalidInput:
            raise
        except ValidationError as e:
            msgs = []
            for err in e.errors():
                ctx = err.get("ctx") or {}
                inner = ctx.get("error")
                msg = inner.message if isinstance(inner, InvalidInput) else err["msg"]
                msgs.append(f"{'.'.join(str(p) for p in err['loc'])}: {msg}")
            raise InvalidInput("; ".join(msgs)) from None

    def managed_pip(self) -> list[str]:
        preset = PRESETS[self.preset].pip if self.preset else ()
        return _merge_pip(preset, self.pip_packages)

    def managed_apt(self) -> list[str]:
        preset = PRESETS[self.preset].apt if self.preset else ()
        return _merge_apt(preset, self.apt_packages)

    def render(self) -> str:
        return render_dockerfile(self)


# Shell prologue/epilogue used by every installing RUN: materialise the CA from the build
# argument, use it, delete it, all inside one RUN (one layer), see the module docstring.
_CA_ON = (
    'if [ -n "${DS01_CA_PEM:-}" ]; then '
    "printf '%s\\n' \"$DS01_CA_PEM\" > /tmp/ds01-ca.pem; "
    # the extra CAs are added to, not substituted for, the image's own trust store
    "cat /etc/ssl/certs/ca-certificates.crt >> /tmp/ds01-ca.pem 2>/dev/null || true; "
    "export PIP_CERT=/tmp/ds01-ca.pem REQUESTS_CA_BUNDLE=/tmp/ds01-ca.pem SSL_CERT_FILE=/tmp/ds01-ca.pem; fi"
)
_CA_OFF = "rm -f /tmp/ds01-ca.pem"


def _run(commands: list[str]) -> str:
    body = " \\\n    ".join(f"{c};" for c in ["set -eu", _CA_ON, *commands, _CA_OFF])
    return "RUN " + body.rstrip(";")


def _apt_run(packages: list[str]) -> str:
    # ${DS01_CA_PEM:+...} expands to the two words "-o Acquire::https::CAInfo=…" only when a CA
    # was passed, so apt trusts the same bundle as pip for https mirrors.
    ca = "${DS01_CA_PEM:+-o Acquire::https::CAInfo=/tmp/ds01-ca.pem}"
    pk = " ".join(packages)
    return _run(
        [
            f"apt-get {ca} update",
            f"DEBIAN_FRONTEND=noninteractive apt-get {ca} install -y --no-install-recommends {pk}",
            "rm -rf /var/lib/apt/lists/*",
        ]
    )


def _pip_run(packages: list[str]) -> str:
    pk = " ".join(shlex.quote(p) for p in packages)
    return _run([f"python3 -m pip install --no-cache-dir {pk}"])


def render_tools(tools: Iterable[str]) -> list[str]:
    """The RUN that installs the tools the base image lacks (none when it has them all: the
    offline base builds without a network). Host keys an openssh-server install makes are
    removed: one image, many containers."""
    tools = list(tools)
    if not tools:
        return []
    ca = "${DS01_CA_PEM:+-o Acquire::https::CAInfo=/tmp/ds01-ca.pem}"
    check = ("if command -v dpkg-query >/dev/null 2>&1; then for p in " + " ".join(tools) + "; do "
             "case \"$(dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null)\" in *' installed') ;; "
             "*) missing=\"$missing $p\";; esac; done; fi")
    install = (f'if [ -n "$missing" ]; then apt-get {ca} update && '
               f"DEBIAN_FRONTEND=noninteractive apt-get {ca} install -y --no-install-recommends $missing && "
               "rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*; fi")
    return ["# Tools people expect (the admin's list), installed only when the base image lacks them.",
            _run(['missing=""', check, install])]


def render_framework(pip: Iterable[str], index: str | None, label: str | None) -> list[str]:
    """The framework build on top of the base (e.g. PyTorch's CPU wheels)."""
    pip = list(pip)
    if not pip:
        return []
    extra = f"--extra-index-url {index} " if index else ""
    pk = " ".join(shlex.quote(p) for p in pip)
    return [f"# The framework{(' (' + label + ')') if label else ''}, installed on the base image.",
            _run([f"python3 -m pip install --no-cache-dir {extra}{pk}"])]


def render_requirements_block(req_file: str, inputs: Iterable[str]) -> str:
    """The requirements block: the file and every project path it names, copied to the same
    place under /workspace, and pip run there (relative paths mean what they mean in the
    project; the running container's /workspace, the project itself, hides these copies)."""
    paths = [validate_input(p) for p in inputs if validate_input(p) != req_file]
    lines = [REQ_BEGIN,
             f"# Your requirements file and the project files it names, copied to /workspace, where its",
             "# relative paths work (your project, mounted there when the container runs, hides these",
             "# copies). Regenerated from the requirements file by image-update and project-launch."]
    if "." in paths:
        lines.append("COPY . /workspace/")
    else:
        lines += [f"COPY {p} /workspace/{p}" for p in [req_file, *paths]]
    lines += [_run(["cd /workspace", f"python3 -m pip install --no-cache-dir -r {req_file}"]), REQ_END]
    return "\n".join(line.rstrip() for line in lines)


def _old_requirements(req_file: str) -> str:
    """The two lines image-create wrote before the requirements block existed."""
    return "\n".join([f"COPY {req_file} /opt/ds01/requirements.txt",
                      _run(["python3 -m pip install --no-cache-dir -r /opt/ds01/requirements.txt"])])


def sync_requirements(text: str, req_file: str, inputs: Iterable[str]) -> str | None:
    """``text`` with its requirements section made to copy ``inputs``: the block is rewritten;
    the old two-line form becomes the block when the file names other project files. None when
    the Dockerfile has neither (it is the user's own: DS01 does not guess)."""
    inputs = list(inputs)
    if REQ_BEGIN in text and REQ_END in text:
        a = text.index(REQ_BEGIN)
        b = text.index(REQ_END, a) + len(REQ_END)
        return text[:a] + render_requirements_block(req_file, inputs) + text[b:]
    old = _old_requirements(req_file)
    if old in text:
        if not [p for p in inputs if validate_input(p) != req_file]:
            return text
        return text.replace(old, render_requirements_block(req_file, inputs), 1)
    return None


def render_managed_block(apt: list[str], pip: list[str]) -> str:
    """The marker block (both marker lines included, no trailing newline)."""
    lines = [
        BEGIN_MARKER,
        "# Managed by DS01: `ds01 image-update <project> --add PKG / --add-apt PKG` rewrites everything",
        "# between these two markers from the two lists below. Edit the rest of the file freely.",
        "# apt: " + " ".join(apt),
        "# pip: " + " ".join(pip),
    ]
    if apt:
        lines += ["", "# System packages.", _apt_run(apt)]
    if pip:
        lines += ["", "# Python packages.", _pip_run(pip)]
    lines.append(END_MARKER)
    return "\n".join(line.rstrip() for line in lines)


def render_dockerfile(spec: DockerfileSpec) -> str:
    """The full Dockerfile text for ``spec`` (deterministic: same spec, same bytes)."""
    out: list[str] = [
        f"# Dockerfile for the DS01 project {spec.project!r}, written by `ds01 image-create`.",
        "#",
        "# This file is yours: edit it as you like. DS01 changes only the block between the",
        "# '>>> ds01 managed: packages' markers below (via `ds01 image-update`).",
        f"# Build: `ds01 image-update {spec.project} --rebuild` (the daemon builds it as ds01/<you>/{spec.project}:latest).",
        "# /workspace is your project directory, mounted when the container runs; anything the",
        "# build puts there would be hidden, so installs go elsewhere.",
        "",
        f"FROM {spec.base_image}",
        "",
        "# Informational; the daemon sets the labels it relies on (ds01.*, reserved) itself when it builds.",
        f'LABEL org.ds01.project="{spec.project}"' + (f' org.ds01.framework="{spec.framework}"' if spec.framework else ""),
        "",
        "# Build-time settings the daemon fills in from the admin's config (empty by default).",
        "# DS01_CA_PEM: extra CA bundle, used and deleted within each RUN, never stored in a layer.",
        "# PIP_*: package index and the admin's wheelhouse (PIP_FIND_LINKS); declared as ARG so they",
        "# do not stay in the image's environment.",
        "# Proxy variables are Docker's predefined build args and are left undeclared on purpose.",
        "ARG DS01_CA_PEM",
        "ARG PIP_INDEX_URL",
        "ARG PIP_EXTRA_INDEX_URL",
        "ARG PIP_TRUSTED_HOST",
        "ARG PIP_FIND_LINKS",
    ]
    if spec.tools:
        out += ["", *render_tools(spec.tools)]
    if spec.framework_pip:
        out += ["", *render_framework(spec.framework_pip, spec.framework_index, spec.framework)]
    if spec.preset:
        out += ["", f"# Preset '{spec.preset}': {PRESETS[spec.preset].description}."]
    out += ["", render_managed_block(spec.managed_apt(), spec.managed_pip())]
    if spec.requirements_file and [p for p in spec.requirements_inputs if p != spec.requirements_file]:
        out += ["", render_requirements_block(spec.requirements_file, spec.requirements_inputs)]
    elif spec.requirements_file:
        out += [
            "",
            f"# Your requirements file ({spec.requirements_file}), copied and installed as it is.",
            _old_requirements(spec.requirements_file),
        ]
    out += [
        "",
        "# Caches live in the workspace so downloads (models, datasets) survive the container.",
        "ENV XDG_CACHE_HOME=/workspace/.cache \\",
        "    HF_HOME=/workspace/.cache/huggingface \\",
        "    TORCH_HOME=/workspace/.cache/torch \\",
        "    MPLCONFIGDIR=/workspace/.cache/matplotlib \\",
        "    PIP_CACHE_DIR=/workspace/.cache/pip \\",
        "    PYTHONUNBUFFERED=1",
        "",
        "WORKDIR /workspace",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- the managed block


def _find_block(text: str) -> tuple[int, int]:
    """Return (start, end) character offsets: ``text[start:end]`` is the block from the first
    character of the begin marker line to the end of the end marker's text (its newline, if
    any, stays outside). Raises InvalidInput when the markers are missing, repeated or swapped."""
    begins: list[int] = []
    ends: list[tuple[int, int]] = []
    pos = 0
    # Split on "\n" only, as Docker does (str.splitlines would also split on \x0b, \u2028, ...).
    for line in text.split("\n"):
        content = line.rstrip("\r")
        if content.strip() == BEGIN_MARKER:
            begins.append(pos)
        elif content.strip() == END_MARKER:
            ends.append((pos, pos + len(content)))
        pos += len(line) + 1
    if len(begins) != 1 or len(ends) != 1:
        what = "missing" if not begins or not ends else "repeated"
        raise InvalidInput(f"the Dockerfile's DS01 managed block markers are {what}", _MARKER_HINT)
    start, (end_line, end) = begins[0], ends[0]
    if end_line < start:
        raise InvalidInput("the Dockerfile's DS01 managed block markers are in the wrong order", _MARKER_HINT)
    return start, end


def parse_managed_block(text: str) -> tuple[list[str], list[str]]:
    """The (apt, pip) lists recorded in the managed block. Raises InvalidInput when the markers
    are missing or a recorded name is invalid."""
    start, end = _find_block(text)
    apt: list[str] = []
    pip: list[str] = []
    for line in text[start:end].split("\n"):
        s = line.strip()
        if s.startswith("# apt:"):
            apt = s[len("# apt:") :].split()
        elif s.startswith("# pip:"):
            pip = s[len("# pip:") :].split()
    return _merge_apt([], apt), _merge_pip([], pip)


def update_managed_block(
    text: str,
    add_pip: Iterable[str] = (),
    add_apt: Iterable[str] = (),
    remove_pip: Iterable[str] = (),
    remove_apt: Iterable[str] = (),
) -> str:
    """Return ``text`` with the managed block regenerated from its lists plus/minus the given
    packages. Everything outside the markers is returned byte for byte. Raises InvalidInput on
    a bad package name or missing markers."""
    apt, pip = parse_managed_block(text)
    apt = _merge_apt(apt, add_apt, remove_apt)
    pip = _merge_pip(pip, add_pip, remove_pip)
    start, end = _find_block(text)
    return text[:start] + render_managed_block(apt, pip) + text[end:]


# --------------------------------------------------------------------------- change detection
# content_hash lives in dockerfile_text (import-light for the CLI) and is re-exported here.


