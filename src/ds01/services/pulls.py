"""Pulls of allowed images that are not on the host (issue 17), single-flight.

One pull per normalised reference at a time: a second request for the same image joins the
running pull and sees the same progress events from its start (it transfers nothing itself).
Progress is per layer: ``{"pull": ref, "layer": id, "status", "current", "total", "speed",
"eta"}`` (bytes, bytes/s, seconds), throttled to one event per layer per 0.5 s plus every change
of status; the last event is ``{"pulled": {...}}`` (image, id, source, bytes, seconds, joined,
transferred). Registries resolve through ``images.mirrors``; credentials come from the root-only
``images.credentials_file``. Transient failures (unreachable, timeout) are retried
``images.pull_retries`` times with back-off; the engine tags only complete images, and a
mirror's spelling is removed again, so a failure leaves no new name behind.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from typing import Any, Iterator

from ds01.errors import DS01Error, NotFound, PermissionDenied, RuntimeFailure
from ds01.services.context import Context

THROTTLE = 0.5


class _Flight:
    def __init__(self, ref: str):
        self.ref = ref
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.done = False
        self.error: DS01Error | None = None
        self.result: dict[str, Any] = {}

    def put(self, ev: dict) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def finish(self, result: dict | None, error: DS01Error | None) -> None:
        with self.cond:
            self.result, self.error, self.done = result or {}, error, True
            self.cond.notify_all()


def resolve(ref: str, mirrors: dict[str, str]) -> tuple[str, str, str]:
    """(name to pull, tag, source shown) for ``ref``: through the mirror configured for its
    registry (``docker.io`` for Hub images, with ``library/`` for official ones), else as is."""
    from ds01.images.catalog import normalize_ref

    r = normalize_ref(ref)
    tag = r.tag or "latest"
    mirror = None
    for key, value in mirrors.items():
        k = key.strip().lower().rstrip("/")
        if k in ("docker.io", "index.docker.io", "registry-1.docker.io", "hub"):
            k = "docker.io"
        if k == r.domain:
            mirror = value.strip().rstrip("/")
            for scheme in ("http://", "https://"):
                mirror = mirror.removeprefix(scheme)
    if mirror:
        return f"{mirror}/{r.path}", tag, f"{mirror} (mirror of {r.domain})"
    name = r.path if r.domain == "docker.io" else f"{r.domain}/{r.path}"
    return name, tag, r.domain


def load_credentials(path: str | None) -> dict[str, dict]:
    """The credentials file, refused (PermissionDenied) unless root-owned and not readable by
    group or others; {} when unset or absent."""
    if not path or not os.path.exists(path):
        return {}
    st = os.stat(path)
    if st.st_uid != 0 or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionDenied(f"{path} must be owned by root with mode 0600; it is not used",
                               f"chown root:root {path} && chmod 600 {path}")
    with open(path) as f:
        data = json.load(f)
    return {str(k).lower().rstrip("/"): v for k, v in data.items() if isinstance(v, dict)}


def _host_built(ref: str) -> bool:
    from ds01.images.catalog import load_catalog

    entry = load_catalog().by_image(ref)
    return bool(entry and entry.local)


class PullService:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self.sources: dict[str, str] = {}  # image id -> where it was pulled from (this daemon's life)
        self.pulls_started = 0  # engine pulls begun (tests: two launches -> one pull)
        self.pulls_joined = 0  # requests that waited on a pull already running

    @property
    def cfg(self):
        return self.ctx.config

    def ensure(self, who, ref: str, actor=None) -> Iterator[dict]:
        """Yield progress events until ``ref`` is on the host, then ``{"pulled": …}``; nothing
        but ``{"pulled": {"present": True}}`` when it already is. Raises the pull's error (for
        every waiter). ``who`` must already be allowed to use ``ref`` (``images.allowed`` is
        checked here too)."""
        from ds01.images.catalog import check_image_allowed, normalize_ref

        check_image_allowed(ref, self.cfg.images.allowed)
        r = normalize_ref(ref)
        key = r.canonical
        info = self.ctx.runtime.image_inspect(ref)
        if info is not None:
            yield {"pulled": {"image": ref, "id": info.id, "present": True, "transferred": 0}}
            return
        if r.ds01_parts() is not None or _host_built(ref):  # never fetch DS01's own names from a registry
            raise NotFound(f"image {ref!r} does not exist", "DS01's images are built on this host, never pulled")
        with self._lock:
            flight = self._flights.get(key)
            joined = flight is not None
            self.pulls_joined += joined
            if flight is None:
                flight = self._flights[key] = _Flight(ref)
                self.pulls_started += 1
                threading.Thread(target=self._run, args=(flight, key, who, actor), daemon=True,
                                 name=f"pull {ref}").start()
        i = 0
        while True:
            with flight.cond:
                while i >= len(flight.events) and not flight.done:
                    flight.cond.wait(1.0)
                batch = flight.events[i:]
                i += len(batch)
                done = flight.done and i >= len(flight.events)
            yield from batch
            if done:
                break
        if flight.error is not None:
            raise flight.error
        res = dict(flight.result, joined=joined)
        if joined:
            res["transferred"] = 0
        yield {"pulled": res}

    def pull(self, who, ref: str, actor=None) -> dict:
        """``ensure`` without the events: the final result."""
        out: dict = {}
        for ev in self.ensure(who, ref, actor):
            out = ev.get("pulled", out)
        return out

    # -- the one pull -------------------------------------------------------------------------
    def _run(self, flight: _Flight, key: str, who, actor) -> None:
        t0 = time.monotonic()
        source = ""
        try:
            name, tag, source = resolve(flight.ref, dict(self.cfg.images.mirrors))
            flight.put({"line": f"Pulling {flight.ref} from {source}"})
            creds = load_credentials(self.cfg.images.credentials_file)
            host = name.split("/", 1)[0].lower() if "/" in name else "docker.io"
            auth = creds.get(host) or creds.get(source.split(" ", 1)[0].lower())
            attempts = self.cfg.images.pull_retries + 1
            for attempt in range(attempts):
                try:
                    total = self._transfer(flight, name, tag, auth, source, t0)
                    break
                except DS01Error as e:
                    if not getattr(e, "transient", False) or attempt + 1 >= attempts:
                        raise
                    wait = min(2 ** attempt, 30)
                    flight.put({"line": f"{e.message}; retrying in {wait} s ({attempt + 2}/{attempts})"})
                    time.sleep(wait)
            info = self._settle(flight.ref, name, tag)
            self.sources[info.id] = source
            secs = round(time.monotonic() - t0, 1)
            result = {"image": flight.ref, "id": info.id, "source": source, "bytes": total,
                      "transferred": total, "seconds": secs}
            self.ctx.emit("image.pull", who, flight.ref, "ok", None, {"source": source, "bytes": total,
                                                                      "seconds": secs}, actor)
            flight.finish(result, None)
        except DS01Error as e:
            self.ctx.emit("image.pull", who, flight.ref, "error", e.code, {"message": e.message, "source": source},
                          actor)
            flight.finish(None, e)
        except Exception as e:  # never leave waiters hanging
            flight.finish(None, RuntimeFailure(f"pulling {flight.ref} failed: {e}"))
        finally:
            with self._lock:
                self._flights.pop(key, None)

    def _transfer(self, flight: _Flight, name: str, tag: str, auth, source: str, t0: float) -> int:
        """One engine pull, its messages turned into per-layer events; the bytes downloaded."""
        from ds01.runtime.docker_pull import PullFailed, pull_stream

        deadline = t0 + self.cfg.images.pull_timeout
        layers: dict[str, dict] = {}
        for msg in pull_stream(self.ctx.runtime, name, tag, auth, source, flight.ref):
            now = time.monotonic()
            if now > deadline:
                raise PullFailed(f"pulling {flight.ref} took longer than images.pull_timeout "
                                 f"({int(self.cfg.images.pull_timeout)} s)", "pull again, or raise the timeout",
                                 transient=True)
            lid, status = msg.get("id"), str(msg.get("status") or "")
            if not lid or lid == tag or status.startswith(("Pulling from", "Digest", "Status")):
                if status:
                    flight.put({"line": status if not lid or lid == tag else f"{lid}: {status}"})
                continue
            st = layers.setdefault(lid, {"status": "", "current": 0, "total": 0, "t0": now, "sent": 0.0})
            detail = msg.get("progressDetail") or {}
            downloading = status == "Downloading"
            if downloading:
                st["current"], st["total"] = int(detail.get("current") or 0), int(detail.get("total") or 0)
            elif status in ("Download complete", "Pull complete", "Already exists") and st["total"]:
                st["current"] = st["total"]
            changed = status != st["status"]
            st["status"] = status
            if not changed and now - st["sent"] < THROTTLE:
                continue
            st["sent"] = now
            ev: dict[str, Any] = {"pull": flight.ref, "layer": lid, "status": status}
            if st["total"]:
                speed = st["current"] / max(now - st["t0"], 1e-3)
                ev.update(current=st["current"], total=st["total"], speed=int(speed))
                if downloading and speed > 0:
                    ev["eta"] = round((st["total"] - st["current"]) / speed, 1)
            flight.put(ev)
        return sum(s["total"] for s in layers.values() if s["status"] != "Already exists")

    def _settle(self, ref: str, name: str, tag: str):
        """The pulled image under the name asked for; the mirror's name removed."""
        from ds01.images.catalog import normalize_ref
        from ds01.runtime.docker_pull import untag

        pulled = f"{name}:{tag}"
        info = self.ctx.runtime.image_inspect(pulled)
        if info is None:
            raise RuntimeFailure(f"the engine reported {ref} pulled but does not have it", "pull again")
        if normalize_ref(pulled) != normalize_ref(ref):
            r = normalize_ref(ref)
            repo = r.path if r.domain == "docker.io" else r.repository
            if repo.startswith("library/"):
                repo = repo[len("library/"):]
            try:
                self.ctx.runtime.image_tag(info.id, repo, r.tag or "latest")
            finally:
                untag(self.ctx.runtime, pulled)
            info = self.ctx.runtime.image_inspect(ref)
            if info is None:
                raise RuntimeFailure(f"{ref} could not be tagged after the pull", "pull again")
        return info
