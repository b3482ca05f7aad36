"""The environment a user works in, the same in every way in (pure decisions, no I/O).

A command run with ``container-run P -- CMD`` gets the container's environment: the image's
``ENV`` plus what policy sets. A *login* shell (``project-launch``, ``container-run P``,
``container-attach``, SSH) first runs ``/etc/profile``, and Debian's resets ``PATH``: the image's
venv (``/opt/venv/bin``), conda or CUDA paths would be gone. So every container gets
``/etc/profile.d/00-ds01-env.sh`` (a root-owned, read-only bound file, written from the image's
inspected ``Config.Env``), which ``/etc/profile`` sources after its reset, for DS01-built and
catalog images alike. Variables set per exec (HOME, USER, TERM, the GPU variables) are left out:
the exec's own values must win.

Package settings at run time (``build.in_containers``, off by default): the build's pip index,
proxy and CA bundle as container environment variables, the CA as a bound file, so ``pip install``
inside a running container works wherever it works in a build. Nothing is written into the image.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

PROFILE_PATH = "/etc/profile.d/00-ds01-env.sh"
CA_PATH = "/etc/ds01/ca-certificates.crt"

# set for each exec (services/exec.py) or by the shell itself: never pinned by the profile file
PER_EXEC = frozenset({"HOME", "USER", "LOGNAME", "TERM", "HOSTNAME", "PWD", "OLDPWD", "SHLVL", "_",
                      "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "DS01_PROJECT_DIR"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """``["K=V", …]`` (an image's ``Config.Env``) as a dict; malformed entries are skipped."""
    out: dict[str, str] = {}
    for item in pairs:
        name, sep, value = str(item).partition("=")
        if sep and _NAME.match(name):
            out[name] = value
    return out


def profile_script(env: dict[str, str]) -> str:
    """The ``/etc/profile.d`` file that puts ``env`` back after ``/etc/profile`` (POSIX sh)."""
    lines = ["# Written by DS01 (read-only): the image's environment, restored for login shells",
             "# (/etc/profile resets PATH), so every way into the container sees the same one."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k not in PER_EXEC and _NAME.match(k)]
    return "\n".join(lines) + "\n"


def index_and_proxy_env(build) -> dict[str, str]:
    """The ``build`` config's pip index and proxy as the variables pip and curl read: the same
    set for build args (``images.buildargs``) and for run-time package settings."""
    env: dict[str, str] = {}
    if build.pip_index_url:
        env["PIP_INDEX_URL"] = build.pip_index_url
    if build.pip_extra_index_url:
        env["PIP_EXTRA_INDEX_URL"] = build.pip_extra_index_url
    if build.http_proxy:
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[k] = build.http_proxy
    return env


def package_env(build, ca: bool) -> dict[str, str]:
    """The build's package settings as run-time variables (``build``: ``models.config.BuildConfig``);
    empty unless ``build.in_containers``. ``ca``: whether the CA bundle file is provided."""
    if not getattr(build, "in_containers", False):
        return {}
    env = index_and_proxy_env(build)
    if ca:  # pip, requests, OpenSSL (curl, Python's ssl) and git all trust the lab's CAs
        for k in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
            env[k] = CA_PATH
    return env


def container_environment(build, image_env: Iterable[str], base_env: dict[str, str],
                          ca_text: str | None) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """(environment variables to add to the container, read-only files to bind into it) for a
    container of an image with ``image_env`` whose policy environment is ``base_env``.
    ``ca_text``: the CA bundle to provide (read by the caller), only used with
    ``build.in_containers``."""
    ca = bool(ca_text) and bool(getattr(build, "in_containers", False))
    extra = package_env(build, ca)
    files: list[tuple[str, str]] = []
    if ca:
        files.append((CA_PATH, str(ca_text)))
    merged = {**parse_env(image_env), **base_env, **extra}
    if any(k not in PER_EXEC for k in merged):
        files.append((PROFILE_PATH, profile_script(merged)))
    return extra, tuple(files)
