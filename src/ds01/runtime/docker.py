"""Docker Engine backend (docker SDK). With its shim ``docker_compat`` (every use of the SDK's
internals), the only module that imports ``docker``."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import threading
import time
from typing import Any, Iterator

from ds01 import labels
from ds01 import labels as label_keys  # build_image has a parameter named labels
from ds01.errors import Conflict, RuntimeFailure
from ds01.runtime import docker_compat as compat
from ds01.runtime.accounts import MAX_ACCOUNT_FILE_BYTES, AccountCache, check_account_text, merge_account, too_large
from ds01.runtime.base import ContainerGone, ContainerInfo, ContainerSpec, ExecHandle, RuntimeBackend
from ds01.runtime.base import ImageInfo, RuntimeImages, Tmpfs
from ds01.runtime.docker_networks import DockerNetworks
from ds01.runtime.files import write_bound_files


def _nano_cpus(cpus: float) -> int:
    return int(cpus * 1e9)


def _tmpfs_options(t: Tmpfs) -> str:
    return f"{'exec' if t.exec else 'noexec'},uid={t.uid},gid={t.gid},mode={t.mode:04o},size={t.size}"


class DockerBackend(DockerNetworks, RuntimeBackend, RuntimeImages):
    def __init__(self, base_url: str | None = None, timeout: int = 120, accounts_dir: str | None = None,
                 quick_timeout: float = 3.0):
        """``accounts_dir``: where the generated passwd/group files of each container live (bind
        mounted read-only; cheaper than writing them into the container's layer, which makes the
        engine mount it). Without one, a private temporary directory is made on the first create.
        ``quick_timeout``/``timeout``: the engine's answer waits for reads/changes (engine_health)."""
        import docker
        from docker import errors as derr

        from ds01.runtime import engine_health

        self._docker = docker
        self._err = derr
        kwargs: dict[str, Any] = {"timeout": timeout, "max_pool_size": 32}
        self.client = docker.DockerClient(base_url=base_url, **kwargs) if base_url else docker.from_env(**kwargs)
        self.api = self.client.api
        # requests would consult proxy variables and ~/.netrc on every call; the engine socket is
        # local, so that is pure overhead (~1 ms a call).
        self.api.trust_env = False
        self.health = engine_health.EngineHealth()
        engine_health.install(self.api, self.health, quick_timeout, timeout)
        self._lock = threading.Lock()
        # image id -> (/etc/passwd, /etc/group) of that image: the same for every container of it
        self._accounts_cache = AccountCache()
        self.accounts_dir = accounts_dir

    # -- helpers ---------------------------------------------------------------------------
    def _fail(self, what: str, e: Exception) -> RuntimeFailure:
        explanation = getattr(e, "explanation", None) or str(e)
        return RuntimeFailure(f"{what}: {explanation}", "if this persists, ask an admin to check the Docker engine")

    def _info(self, attrs: dict) -> ContainerInfo:
        state = attrs.get("State") or {}
        cfg = attrs.get("Config") or {}
        env = dict(e.split("=", 1) for e in (cfg.get("Env") or []) if "=" in e)
        return ContainerInfo(
            id=attrs["Id"],
            name=attrs.get("Name", "").lstrip("/"),
            status=state.get("Status", "unknown"),
            image=cfg.get("Image", ""),
            labels=cfg.get("Labels") or {},
            created=attrs.get("Created"),
            started_at=state.get("StartedAt"),
            finished_at=state.get("FinishedAt"),
            exit_code=state.get("ExitCode"),
            env=env,
            oom_killed=bool(state.get("OOMKilled")),
            image_id=attrs.get("Image") or None,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> ContainerInfo:
        types = self._docker.types
        host_kwargs: dict[str, Any] = dict(
            binds={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts},
            nano_cpus=_nano_cpus(spec.cpus),
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap beyond the memory limit
            shm_size=spec.shm_size,
            pids_limit=spec.pids,
            # the security options exactly as policy decided them (policy/containers.py)
            cap_drop=list(spec.cap_drop) or None,
            security_opt=["no-new-privileges:true"] if spec.no_new_privileges else None,
            init=spec.init,
            tmpfs={t.target: _tmpfs_options(t) for t in spec.tmpfs} or None,
            runtime=spec.runtime,
            port_bindings={p: (ip, hp) for p, ip, hp in spec.ports} or None,
            network_mode=spec.network,  # the user's own network, never the default bridge
        )
        # Docker creates a missing bind source as a directory at create time: write first.
        pw_file, gr_file = self._write_account_files(spec)
        host_kwargs["binds"][pw_file] = {"bind": "/etc/passwd", "mode": "ro"}
        host_kwargs["binds"][gr_file] = {"bind": "/etc/group", "mode": "ro"}
        host_kwargs["binds"].update(write_bound_files(os.path.dirname(pw_file), spec.files))
        if spec.gpu_binding == "device-requests" and spec.gpu_device_ids:
            host_kwargs["device_requests"] = [
                types.DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_device_ids), capabilities=[["gpu"]])
            ]
        # the network's labels: this instance's selector for the container's user
        selector = {k: spec.labels[k] for k in (labels.MANAGED, labels.INSTANCE, labels.UID) if k in spec.labels}
        aliases = [spec.hostname] if spec.hostname else None
        with self._net_lock(spec.network):  # a prune never removes it between these two steps
            self.ensure_network(spec.network, selector)
            return self._create_container(spec, host_kwargs, aliases)

    def _create_container(self, spec: ContainerSpec, host_kwargs: dict[str, Any],
                          aliases: list[str] | None) -> ContainerInfo:
        try:
            host_config = self.api.create_host_config(**host_kwargs)
            cmd = list(spec.command) if spec.command else ["sleep", "infinity"]
            net = self.api.create_networking_config({spec.network: self.api.create_endpoint_config(aliases=aliases)})
            res = self.api.create_container(
                image=spec.image,
                command=cmd,
                name=spec.name,
                user=f"{spec.account.uid}:{spec.account.gid}",
                environment=spec.env,
                working_dir=spec.workdir,
                labels=spec.labels,
                host_config=host_config,
                hostname=spec.hostname,
                ports=[p for p, _, _ in spec.ports] or None,
                networking_config=net,
                detach=True,
            )
        except self._err.ImageNotFound:
            raise RuntimeFailure(
                f"image {spec.image!r} is not on this host",
                "build it with 'image-create <project>' or pick one from 'image-list'",
            ) from None
        except self._err.APIError as e:
            if e.status_code == 409:
                raise Conflict(f"a container named {spec.name} already exists") from None
            raise self._fail("creating the container failed", e) from None
        # Everything an inspect would tell is what was just asked for: spare the round trip.
        return ContainerInfo(id=res["Id"], name=spec.name, status="created", image=spec.image,
                             labels=dict(spec.labels), env=dict(spec.env))

    def _account_files(self, name: str) -> tuple[str, str] | None:
        if not self.accounts_dir:
            return None
        d = os.path.join(self.accounts_dir, name)
        return os.path.join(d, "passwd"), os.path.join(d, "group")

    def _accounts_of_image(self, image: str, image_id: str | None = None) -> tuple[str | None, str | None]:
        """The image's own /etc/passwd and /etc/group (by reference, or its already known id),
        read once per image id through a throwaway created (never started) container, since the
        user's own container already has our files bound."""
        if image_id is None:
            try:
                image_id = self.api.inspect_image(image)["Id"]
            except self._err.ImageNotFound:
                raise RuntimeFailure(f"image {image!r} is not on this host",
                                     "build it with 'image-create <project>' or pick one from 'image-list'") from None
        cached = self._accounts_cache.get(image_id)
        if cached is not None:
            return cached
        tmp = self.api.create_container(image=image_id, command=["/nonexistent"], labels={labels.PROBE: "passwd"})
        try:
            cached = (self._read_account_file(tmp["Id"], "/etc/passwd", image),
                      self._read_account_file(tmp["Id"], "/etc/group", image))
        finally:
            self.api.remove_container(tmp["Id"], force=True)
        self._accounts_cache.put(image_id, cached)
        return cached

    def _write_account_files(self, spec: ContainerSpec) -> tuple[str, str]:
        """The image's passwd/group with the caller merged in, as root-owned files the container
        gets read-only (the image and the container's layer are untouched)."""
        if not self.accounts_dir:  # a backend made without one (tools, benches): a private dir
            with self._lock:
                self.accounts_dir = self.accounts_dir or tempfile.mkdtemp(prefix="ds01-accounts-")
        files = self._account_files(spec.name)
        assert files is not None
        pw, gr = merge_account(*self._accounts_of_image(spec.image, spec.image_id), spec.account)
        os.makedirs(os.path.dirname(files[0]), mode=0o755, exist_ok=True)
        for path, text in zip(files, (pw, gr)):
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        return files

    def _forget_account_files(self, name: str) -> None:
        files = self._account_files(name)
        if files is not None:
            shutil.rmtree(os.path.dirname(files[0]), ignore_errors=True)

    def _read_account_file(self, cid: str, path: str, image: str) -> str | None:
        """One account file of an image, bounded (runtime/accounts.py): its size is checked
        before any of it is read, the stream is cut past the bound (a size that lied), and the
        line count is checked. None when the image has no such regular file."""
        cap = MAX_ACCOUNT_FILE_BYTES
        try:
            stream, stat = self.api.get_archive(cid, path)
        except self._err.NotFound:
            return None
        except self._err.APIError as e:
            raise self._fail(f"reading {path} from the image failed", e) from None
        try:
            size = int((stat or {}).get("size") or 0)
            if size > cap:
                raise too_large(path, image, f"{size} bytes; the limit is {cap}")
            buf, limit = bytearray(), cap + 64 * 1024  # the tar's own headers and padding
            for chunk in stream:
                buf += chunk
                if len(buf) > limit:
                    raise too_large(path, image, f"more than {cap} bytes")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        with tarfile.open(fileobj=io.BytesIO(bytes(buf))) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    if member.size > cap:
                        raise too_large(path, image, f"{member.size} bytes; the limit is {cap}")
                    f = tar.extractfile(member)
                    return check_account_text(path, f.read().decode("utf-8", "replace"), image) if f else None
        return None

    def start(self, container_id: str) -> None:
        try:
            self.api.start(container_id)
        except self._err.NotFound:
            raise ContainerGone(f"container {container_id[:12]} no longer exists") from None
        except self._err.APIError as e:
            raise self._fail("starting the container failed", e) from None

    def stop(self, container_id: str, timeout: float) -> None:
        try:
            self.api.stop(container_id, timeout=int(round(timeout)))
        except self._err.NotFound:
            raise ContainerGone(f"container {container_id[:12]} no longer exists") from None
        except self._err.APIError as e:
            raise self._fail("stopping the container failed", e) from None

    def remove(self, container_id: str, force: bool = False) -> bool:
        name = None
        if self.accounts_dir:
            try:
                name = self.api.inspect_container(container_id)["Name"].lstrip("/")
            except self._err.APIError:
                pass
        try:
            self.api.remove_container(container_id, force=force, v=True)
            if name:
                self._forget_account_files(name)
            return True
        except self._err.NotFound:
            return False
        except self._err.APIError as e:
            if e.status_code == 409 and "removal" in str(e).lower() and "in progress" in str(e).lower():
                return True
            if e.status_code == 409:
                raise Conflict("the container is running", "stop it first or use --force") from None
            raise self._fail("removing the container failed", e) from None

    def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            return self._info(self.api.inspect_container(container_id))
        except self._err.NotFound:
            return None
        except self._err.APIError as e:
            raise self._fail("inspecting the container failed", e) from None

    def list(self, labels: dict[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        try:
            rows = self.api.containers(all=True, filters=filters)
        except self._err.APIError as e:
            raise self._fail("listing containers failed", e) from None
        return [
            ContainerInfo(
                id=r["Id"],
                name=(r.get("Names") or ["/"])[0].lstrip("/"),
                status=r.get("State", "unknown"),
                image=r.get("Image", ""),
                labels=r.get("Labels") or {},
                created=str(r.get("Created")),
            )
            for r in rows
        ]

    def stats(self, container_id: str) -> dict:
        try:
            s = self.api.stats(container_id, stream=False)
        except self._err.NotFound:
            raise ContainerGone(f"container {container_id[:12]} no longer exists") from None
        except self._err.APIError as e:
            raise self._fail("reading container stats failed", e) from None
        cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
        cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0))
        sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
        pct = (cpu_delta / sys_delta) * ncpu * 100.0 if sys_delta > 0 and cpu_delta >= 0 else 0.0
        mem = s.get("memory_stats") or {}
        cache = (mem.get("stats") or {}).get("cache", 0) or (mem.get("stats") or {}).get("inactive_file", 0)
        return {
            "cpu_percent": round(pct, 2),
            "memory_bytes": max(0, int(mem.get("usage", 0)) - int(cache)),
            "memory_limit": int(mem.get("limit", 0)),
            "pids": int((s.get("pids_stats") or {}).get("current", 0)),
        }

    # -- exec ------------------------------------------------------------------------------
    def exec_start(self, container_id: str, cmd: list[str], *, user: str, env: dict[str, str],
                   workdir: str, tty: bool) -> ExecHandle:
        try:
            ex = self.api.exec_create(container_id, cmd, stdout=True, stderr=True, stdin=True, tty=tty,
                                      environment=env, workdir=workdir, user=user)
            sock = self.api.exec_start(ex["Id"], tty=tty, socket=True)
        except self._err.NotFound:
            raise ContainerGone(f"container {container_id[:12]} no longer exists") from None
        except self._err.APIError as e:
            if e.status_code == 409:
                raise Conflict("the container is not running", "start it with 'container-start'") from None
            raise self._fail("starting the command failed", e) from None
        return ExecHandle(id=ex["Id"], sock=compat.raw_socket(sock), tty=tty)

    def exec_frames(self, handle: ExecHandle) -> Iterator[tuple[int, bytes]]:
        return compat.exec_frames(handle.sock, handle.tty)  # type: ignore[arg-type]

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> bool:
        try:
            self.api.exec_resize(exec_id, height=rows, width=cols)
            return True
        except self._err.APIError:
            return False  # not started yet, or already exited

    def exec_exit_code(self, exec_id: str) -> int | None:
        try:
            info = self.api.exec_inspect(exec_id)
        except self._err.APIError:
            return None
        return None if info.get("Running") else info.get("ExitCode")

    def exec_pid(self, exec_id: str) -> int | None:
        try:
            info = self.api.exec_inspect(exec_id)
        except self._err.APIError:
            return None
        return int(info.get("Pid") or 0) or None if info.get("Running") else None

    def security_options(self) -> list[str] | None:
        try:
            return [str(o) for o in self.api.info().get("SecurityOptions") or []]
        except (self._err.APIError, OSError, RuntimeFailure):  # not answering: cannot tell
            return None

    def image_exists(self, ref: str) -> bool:
        try:
            self.api.inspect_image(ref)
            return True
        except self._err.ImageNotFound:
            return False
        except self._err.APIError as e:
            raise self._fail("checking the image failed", e) from None

    def logs(self, container_id: str, tail: int = 50) -> str:
        try:
            return self.api.logs(container_id, tail=tail).decode("utf-8", "replace")
        except self._err.APIError:
            return ""

    def follow_logs(self, container_id: str) -> Iterator[bytes]:
        """The container's whole output (stdout and stderr, from its start), then what it writes
        until it exits (batch jobs, services/jobs.py); ends when the container stops."""
        try:
            yield from self.api.logs(container_id, stream=True, follow=True, stdout=True, stderr=True)
        except self._err.NotFound:
            return
        except self._err.APIError as e:
            raise self._fail("reading the container's output failed", e) from None

    # -- images ----------------------------------------------------------------------------
    def build_image(self, context, *, labels: dict[str, str], buildargs: dict[str, str], nocache: bool,
                    timeout: float, memory: int | None = None, cancel: threading.Event | None = None,
                    pids: int | None = None, cpus: float | None = None):
        import json

        params: dict[str, Any] = {
            "dockerfile": "Dockerfile", "q": False, "nocache": nocache, "rm": True, "forcerm": True,
            "pull": False, "buildargs": json.dumps(buildargs), "labels": json.dumps(labels),
        }
        if memory:
            params.update(memory=memory, memswap=memory)
        if cpus:
            params.update(cpuperiod=100_000, cpuquota=max(1000, int(cpus * 100_000)))
        # named after the daemon instance (its label), so each daemon sweeps only its own
        cg = self._build_cgroup(labels.get(label_keys.INSTANCE) or "default", pids) if pids else None
        if cg is not None:
            params["cgroupparent"] = cg.parent  # every step's container is a child: pids capped in all
        try:
            yield from self._run_build(params, context, timeout, cancel, cg, pids)
        finally:
            if cg is not None:
                cg.close()

    def _build_cgroup(self, instance: str, pids: int):
        from ds01.runtime.build_cgroup import open_build_cgroup

        if getattr(self, "_cgroup_kind", None) is None:
            try:
                info = self.api.info()
            except self._err.APIError as e:
                raise self._fail("reading the engine's cgroup setup failed", e) from None
            self._cgroup_kind = (str(info.get("CgroupDriver") or ""), str(info.get("CgroupVersion") or "1"))
        return open_build_cgroup(*self._cgroup_kind, instance=instance, pids=pids)

    def _run_build(self, params: dict[str, Any], context, timeout: float, cancel: threading.Event | None,
                   cg, pids: int | None):
        from ds01.errors import BuildFailed

        try:
            # requests' own post (APIClient is a requests.Session), so this code owns the response
            # and can cut it at the deadline; timeout=None because a quiet step may run for long.
            resp = self.api.post(compat.api_url(self.api, "/build"), params=params, data=context,
                                 headers={"Content-Type": "application/x-tar"}, stream=True, timeout=None)
        except Exception as e:  # connection-level failure
            raise self._fail("starting the build failed", e) from None
        if resp.status_code >= 400:
            raise BuildFailed(f"the engine refused the build: {resp.text.strip()[:500]}")
        expired = threading.Event()
        stop = cancel or threading.Event()
        done = threading.Event()
        w = threading.Thread(target=self._build_watch, args=(resp, stop, done, expired, timeout), daemon=True)
        w.start()
        try:
            for msg in compat.json_stream(self.api, resp):
                if "error" in msg:
                    err = str(msg.get("error") or (msg.get("errorDetail") or {}).get("message"))
                    if cg is not None and cg.pids_exceeded():
                        err += (f" (the build reached its limit of {pids} processes, the same as your "
                                "containers'; a step started more processes than that)")
                    elif "non-zero code: 137" in err and params.get("memory"):
                        err += (f" (killed: probably out of memory; the build's limit is "
                                f"{int(params['memory']) // 1024**2} MiB, the same as your containers')")
                    yield {"error": err}
                    return
                if "aux" in msg and isinstance(msg["aux"], dict) and msg["aux"].get("ID"):
                    yield {"id": msg["aux"]["ID"]}
                    continue
                if "stream" in msg:
                    yield {"stream": msg["stream"]}
        except Exception as e:  # the watchdog cut the connection, or the engine went away
            if expired.is_set():
                raise BuildFailed(f"the build ran longer than its time limit ({int(timeout)} s) and was stopped",
                                  "make the slow step faster, or ask an admin about build.timeout") from None
            if stop.is_set():
                raise BuildFailed("the build was cancelled") from None
            raise self._fail("the build stream broke", e) from None
        finally:
            done.set()
            resp.close()
        if expired.is_set():
            raise BuildFailed(f"the build ran longer than its time limit ({int(timeout)} s) and was stopped",
                              "make the slow step faster, or ask an admin about build.timeout")
        if stop.is_set():
            raise BuildFailed("the build was cancelled")

    @staticmethod
    def _build_watch(resp, stop: threading.Event, done: threading.Event, expired: threading.Event,
                     timeout: float) -> None:
        """Cut the build's connection at the deadline or on cancel; the engine then aborts the
        build (a classic-builder build is bound to its request)."""
        deadline = time.monotonic() + timeout
        while not done.is_set():
            if stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                break
            if time.monotonic() >= deadline:
                expired.set()
                break
        else:
            return
        if not done.is_set():
            compat.cut(resp)

    def _image_info(self, attrs: dict) -> ImageInfo:
        created = attrs.get("Created")
        if isinstance(created, str):  # inspect gives RFC 3339, list gives unix seconds
            from datetime import datetime

            try:
                created = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
            except ValueError:
                created = 0.0
        return ImageInfo(
            id=attrs.get("Id", ""),
            tags=[t for t in (attrs.get("RepoTags") or []) if t != "<none>:<none>"],
            labels=(attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {},
            size=int(attrs.get("Size") or 0),
            created=float(created or 0),
            digests=[d for d in (attrs.get("RepoDigests") or []) if d != "<none>@<none>"],
            onbuild=list((attrs.get("Config") or {}).get("OnBuild") or []),
            volumes=sorted((attrs.get("Config") or {}).get("Volumes") or {}),
            env=list((attrs.get("Config") or {}).get("Env") or []),
        )

    def image_inspect(self, ref: str) -> ImageInfo | None:
        try:
            return self._image_info(self.api.inspect_image(ref))
        except self._err.ImageNotFound:
            return None
        except self._err.NotFound:
            return None
        except self._err.APIError as e:
            raise self._fail("inspecting the image failed", e) from None

    def image_list(self, labels: dict[str, str]) -> list[ImageInfo]:
        try:
            rows = self.api.images(filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        except self._err.APIError as e:
            raise self._fail("listing images failed", e) from None
        return [self._image_info(r) for r in rows]

    def image_tag(self, image_id: str, repository: str, tag: str) -> None:
        try:
            self.api.tag(image_id, repository, tag, force=True)
        except self._err.APIError as e:
            raise self._fail("tagging the image failed", e) from None

    def image_remove(self, ref: str, force: bool = False) -> bool:
        try:
            self.api.remove_image(ref, force=force)
            return True
        except self._err.ImageNotFound:
            return False
        except self._err.NotFound:
            return False
        except self._err.APIError as e:
            if e.status_code == 409:
                raise Conflict(f"image {ref} is in use by a container",
                               "remove the container first (or use --force)") from None
            raise self._fail("removing the image failed", e) from None

    def image_history(self, ref: str) -> list[dict] | None:
        try:
            return list(self.api.history(ref))
        except (self._err.ImageNotFound, self._err.NotFound):
            return None
        except self._err.APIError as e:
            raise self._fail("reading the image history failed", e) from None

    def image_import(self, rootfs_tar: str, repository: str, tag: str, changes: list[str]) -> str:
        import json

        try:
            out = self.api.import_image_from_file(rootfs_tar, repository=repository, tag=tag, changes=changes)
        except self._err.APIError as e:
            raise self._fail("importing the root filesystem failed", e) from None
        # The engine answers with JSON lines; the last carries {"status": "sha256:…"}.
        text = out if isinstance(out, str) else out.decode() if isinstance(out, bytes) else str(out)
        image_id = ""
        for line in text.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("error"):
                raise RuntimeFailure(f"importing the root filesystem failed: {msg['error']}")
            if str(msg.get("status", "")).startswith("sha256:"):
                image_id = msg["status"]
        info = self.image_inspect(f"{repository}:{tag}")
        return info.id if info else image_id
