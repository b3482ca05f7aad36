"""Image pulls through the engine (issue 17): the engine's progress stream as plain dicts, and
its failures as DS01 errors with a cause a person can act on.

The engine itself makes a pull atomic: a tag appears only once every layer is in place, so an
interrupted pull leaves at most untagged layers (reused by the next pull), never a half-tagged
image. Retagging a mirror's name to the name asked for is done by the caller (services/pulls.py).
"""

from __future__ import annotations

from typing import Any, Iterator

from ds01.errors import DS01Error, NotFound, PermissionDenied, RuntimeFailure


class PullFailed(RuntimeFailure):
    """A pull that did not complete; ``transient`` when a retry may help (network, timeout)."""

    def __init__(self, message: str, hint: str | None = None, details: dict | None = None,
                 transient: bool = False):
        super().__init__(message, hint, details)
        self.transient = transient


def classify(ref: str, source: str, text: str) -> DS01Error:
    """The engine's error text for a pull of ``ref`` from ``source`` as a DS01 error."""
    t = text.lower()
    where = f"{ref} (from {source})" if source else ref
    if "no space left" in t:
        return PullFailed(f"pulling {where} failed: the disk is full",
                          "an admin frees space ('ds01 admin images prune'), then pull again", {"engine": text[:500]})
    if "unauthorized" in t or "authentication required" in t or "denied" in t and "access" in t:
        return PermissionDenied(f"pulling {where} failed: the registry refused the credentials (unauthorized)",
                                "an admin checks images.credentials_file for that registry")
    if "manifest unknown" in t or "not found" in t or "does not exist" in t:
        return NotFound(f"image {ref} was not found in {source or 'its registry'}",
                        "check the tag ('image-list --catalog' shows the known ones)")
    if any(k in t for k in ("connection refused", "no such host", "i/o timeout", "timeout", "dial tcp",
                            "connection reset", "tls handshake", "network is unreachable", "eof")):
        return PullFailed(f"pulling {where} failed: the registry {source} is unreachable",
                          "check the network or the mirror in images.mirrors", {"engine": text[:500]}, transient=True)
    return PullFailed(f"pulling {where} failed: {text[:300]}", None, {"engine": text[:500]})


def pull_stream(backend: Any, name: str, tag: str, auth: dict | None, source: str, ref: str) -> Iterator[dict]:
    """Yield the engine's progress messages for ``name:tag`` (``{"id", "status",
    "progressDetail": {"current", "total"}}``); raise a DS01 error (see :func:`classify`) on
    failure. ``backend`` is a ``DockerBackend`` (its SDK client is used as is)."""
    import docker

    try:
        for msg in backend.api.pull(name, tag=tag, stream=True, decode=True, auth_config=auth):
            if isinstance(msg, dict) and msg.get("error"):
                raise classify(ref, source, str(msg.get("error")))
            yield msg
    except docker.errors.APIError as e:
        raise classify(ref, source, str(getattr(e, "explanation", None) or e)) from None
    except (docker.errors.DockerException, OSError) as e:
        if isinstance(e, DS01Error):
            raise
        raise classify(ref, source, str(e)) from None


def tag(backend: Any, image: str, repo: str, tag_: str) -> None:
    backend.api.tag(image, repo, tag_)


def untag(backend: Any, name: str) -> None:
    """Remove one name (the mirror's spelling) without touching the image's other names."""
    import docker

    try:
        backend.api.remove_image(name, noprune=True)
    except docker.errors.APIError:
        pass


def image_usage(backend: Any) -> tuple[list[dict], list[dict]]:
    """(images, containers) as the engine reports them for housekeeping: every image with
    ``Id, RepoTags, Size, SharedSize, Created, LastTagTime`` and every container with ``Id,
    Names, ImageID, Labels, Created, State`` (one ``/system/df`` call plus a cheap inspect per
    image for its last tag time, which a pull sets)."""
    df = backend.api.df()
    images = []
    for row in df.get("Images") or []:
        row = dict(row)
        try:
            meta = backend.api.inspect_image(row["Id"]).get("Metadata") or {}
            row["LastTagTime"] = meta.get("LastTagTime") or ""
        except Exception:  # gone meanwhile
            continue
        images.append(row)
    return images, list(backend.api.containers(all=True))


def push(backend: Any, image: str, repo: str, tag_: str) -> str:
    """Push ``image`` (id or name) as ``repo:tag`` (cluster mode: the lab registry every node
    pulls from) and return the manifest digest the registry stored; the ``repo:tag`` name is
    removed here again afterwards (the head keeps its own name only). Raises a DS01 error
    naming the registry on failure."""
    import docker

    tag(backend, image, repo, tag_)
    digest = ""
    try:
        for msg in backend.api.push(repo, tag=tag_, stream=True, decode=True):
            if isinstance(msg, dict) and msg.get("error"):
                raise classify(f"{repo}:{tag_}", repo.split("/")[0], str(msg.get("error")))
            if isinstance(msg, dict) and isinstance(msg.get("aux"), dict):
                digest = str(msg["aux"].get("Digest") or digest)
    except docker.errors.APIError as e:
        raise classify(f"{repo}:{tag_}", repo.split("/")[0], str(getattr(e, "explanation", None) or e)) from None
    finally:
        untag(backend, f"{repo}:{tag_}")
    if not digest.startswith("sha256:"):
        raise PullFailed(f"pushing {repo}:{tag_} gave no digest", "check the registry in cluster.registry")
    return digest


def ensure(backend: Any, ref: str) -> None:
    """Pull ``ref`` (``repo@sha256:…`` or ``repo:tag``) unless the engine has it: a node fetching
    an image the head pushed."""
    if backend.image_exists(ref):
        return
    if "@" in ref:
        name, tag_ = ref.split("@", 1)
    elif ":" in ref.rsplit("/", 1)[-1]:
        name, _, tag_ = ref.rpartition(":")
    else:
        name, tag_ = ref, "latest"
    for _ in pull_stream(backend, name, tag_, None, name.split("/")[0], ref):
        pass
