"""The head's container runtime in cluster mode (issue 18): one ``RuntimeBackend`` over every
node's agent, so the services above drive containers on any node exactly as on one server.

Contract (beyond ``RuntimeBackend``): a container's node is the ``ds01.node`` label of its spec
(set from the Slurm job that placed it) and afterwards what ``node_of(container id)`` says (the
head's records). ``list`` asks every node at once and answers for the nodes that answered;
``down`` names the ones that did not (their containers are not reported missing: an ``inspect``
of one raises ``NodeUnavailable``, never "gone"). Images stay on the head's own engine (built
here, pushed to the lab registry, pulled by nodes): every image method is the local backend's.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from ds01 import labels
from ds01.errors import InvalidInput, NodeUnavailable, NotFound
from ds01.models.container import ContainerSpec, spec_to_dict
from ds01.runtime.base import ContainerInfo, ExecHandle, RuntimeBackend, RuntimeImages
from ds01.runtime.node_client import NodeClient


def _info(d: dict[str, Any]) -> ContainerInfo:
    return ContainerInfo(**d)


class ClusterRuntime(RuntimeBackend, RuntimeImages):
    remote = True  # exec signals go to the node (services/exec.py), not to a local pid

    def __init__(self, local: Any, nodes: dict[str, NodeClient],
                 node_of: Callable[[str], str | None] | None = None):
        self.local = local  # the head's engine: images only
        self.nodes = nodes
        self.node_of = node_of or (lambda cid: None)
        self.down: set[str] = set()
        self._where: dict[str, str] = {}  # container id (or exec id) -> node
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ds01d-nodes")

    def __getattr__(self, name: str) -> Any:  # image methods, security_options, client: the head's engine
        return getattr(self.local, name)

    def _client(self, node: str | None) -> NodeClient:
        if node is None or node not in self.nodes:
            raise NotFound(f"no such node {node!r} in this cluster")
        return self.nodes[node]

    def _node(self, cid: str) -> str:
        node = self._where.get(cid) or self.node_of(cid)
        unanswered: NodeUnavailable | None = None
        if node is None:  # not one of ours (a record without a node, or a stray id)
            for name in self.nodes:
                try:
                    if self.nodes[name].call("GET", f"/v1/containers/{cid}") is not None:
                        node = name
                        break
                except NodeUnavailable as e:
                    unanswered = e
        if node is None:
            if unanswered is not None:  # it may be on the node that did not answer: not "gone"
                raise unanswered
            raise NotFound(f"container {cid[:12]} is on no node of this cluster")
        with self._lock:
            self._where[cid] = node
        return node

    def _call(self, cid: str, method: str, verb: str = "", body: dict | None = None,
              timeout: float | None = None) -> Any:
        path = f"/v1/containers/{cid}" + (f"/{verb}" if verb else "")
        return self._client(self._node(cid)).call(method, path, body, timeout=timeout)

    # -- containers ------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> ContainerInfo:
        node = spec.labels.get(labels.NODE)
        try:
            job = int(spec.labels[labels.SLURM_JOB])
        except (KeyError, ValueError):
            raise InvalidInput("a cluster container needs the Slurm job that placed it") from None
        info = _info(self._client(node).call("POST", "/v1/containers", {"spec": spec_to_dict(spec), "job": job},
                                            timeout=120))
        with self._lock:
            self._where[info.id] = node  # type: ignore[assignment]
        return info

    def start(self, container_id: str) -> None:
        self._call(container_id, "POST", "start", {}, timeout=120)

    def stop(self, container_id: str, timeout: float) -> None:
        self._call(container_id, "POST", "stop", {"timeout": timeout}, timeout=timeout + 30)

    def remove(self, container_id: str, force: bool = False) -> bool:
        try:
            node = self._node(container_id)
        except NotFound:
            return False
        return bool(self._client(node).call("POST", f"/v1/containers/{container_id}/remove", {"force": force},
                                            timeout=60))

    def inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            node = self._node(container_id)
        except NotFound:
            return None
        d = self._client(node).call("GET", f"/v1/containers/{container_id}")
        return _info(d) if d else None

    def list(self, selector: dict[str, str]) -> list[ContainerInfo]:
        def one(name: str) -> tuple[str, list[dict] | None]:
            try:
                return name, self.nodes[name].call("POST", "/v1/list", {"selector": selector})
            except NodeUnavailable:
                return name, None

        out: list[ContainerInfo] = []
        down = set()
        for name, rows in self._pool.map(one, list(self.nodes)):
            if rows is None:
                down.add(name)
                continue
            for d in rows:
                info = _info(d)
                out.append(info)
                with self._lock:
                    self._where[info.id] = name
        self.down = down
        return out

    def stats(self, container_id: str) -> dict:
        return self._call(container_id, "GET", "stats")

    def sample(self, container_id: str, ignore: list[str]) -> dict:
        """Idle reclaim's measurements of a container, made on its node (services/node.py)."""
        return self._call(container_id, "POST", "sample", {"ignore": list(ignore)}) or {}

    def logs(self, container_id: str, tail: int = 50) -> str:
        return self._client(self._node(container_id)).call("GET", f"/v1/containers/{container_id}/logs?tail={int(tail)}")

    def follow_logs(self, container_id: str) -> Iterator[bytes]:
        yield from self._client(self._node(container_id)).stream(f"/v1/containers/{container_id}/follow")

    def prune_networks(self, selector: dict[str, str]) -> int:
        return 0  # each agent's engine keeps the user's network; it is removed with the node's last container

    def events(self) -> Iterator[dict]:
        return iter(())

    # -- exec ------------------------------------------------------------------------------
    def exec_start(self, container_id: str, cmd: list[str], *, user: str, env: dict[str, str],
                   workdir: str, tty: bool) -> ExecHandle:
        node = self._node(container_id)
        exec_id, sock = self._client(node).exec_open({"container": container_id, "cmd": cmd, "user": user,
                                                      "env": env, "workdir": workdir, "tty": tty})
        with self._lock:
            self._where[exec_id] = node
        return ExecHandle(id=exec_id, sock=sock, tty=tty)

    def exec_frames(self, handle: ExecHandle) -> Iterator[tuple[int, bytes]]:
        from ds01.runtime import docker_compat

        return docker_compat.exec_frames(handle.sock, handle.tty)  # type: ignore[arg-type]

    def _exec_call(self, exec_id: str, method: str, verb: str, body: dict | None = None) -> Any:
        node = self._where.get(exec_id)
        if node is None:
            return None
        try:
            return self._client(node).call(method, f"/v1/exec/{exec_id}/{verb}", body)
        except NodeUnavailable:
            return None

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> bool:
        return bool(self._exec_call(exec_id, "POST", "resize", {"rows": rows, "cols": cols}))

    def exec_exit_code(self, exec_id: str) -> int | None:
        st = self._exec_call(exec_id, "GET", "state")
        return None if not st else st.get("exit_code")

    def exec_pid(self, exec_id: str) -> int | None:
        st = self._exec_call(exec_id, "GET", "state")
        return None if not st else st.get("pid")

    def exec_signal(self, exec_id: str, container_id: str, sig: int) -> bool:
        return bool(self._exec_call(exec_id, "POST", "signal", {"container": container_id, "signal": int(sig)}))

    def image_exists(self, ref: str) -> bool:
        return self.local.image_exists(ref)

    def utilization(self) -> dict[str, Any]:
        """Every answering node's GPU use, keyed by the head's device keys (``node/gpuN``)."""
        from ds01.models.gpu import DeviceUtil
        from ds01.policy.placement import device_key

        def one(name: str) -> tuple[str, dict]:
            try:
                return name, (self.nodes[name].call("GET", "/v1/node") or {}).get("utilization") or {}
            except NodeUnavailable:
                return name, {}

        out = {}
        for name, util in self._pool.map(one, list(self.nodes)):
            for idx, u in util.items():
                out[device_key(name, int(idx))] = DeviceUtil(u.get("gpu_percent"), u.get("memory_used_bytes"))
        return out

    # -- images: the head's engine (built here, pushed to the lab registry, pulled by nodes) -----
    def build_image(self, context, **kw):
        return self.local.build_image(context, **kw)

    def image_inspect(self, ref: str):
        return self.local.image_inspect(ref)

    def image_list(self, labels: dict[str, str]):
        return self.local.image_list(labels)

    def image_tag(self, image_id: str, repository: str, tag: str) -> None:
        self.local.image_tag(image_id, repository, tag)

    def image_remove(self, ref: str, force: bool = False) -> bool:
        return self.local.image_remove(ref, force)

    def image_history(self, ref: str):
        return self.local.image_history(ref)

    def image_import(self, rootfs_tar: str, repository: str, tag: str, changes: list[str]) -> str:
        return self.local.image_import(rootfs_tar, repository, tag, changes)


class ClusterGpuSource:
    """The head's ``InventorySource`` in cluster mode: the devices are Slurm's (the placement
    reads them), their use is each node's, asked of its agent."""

    kind = "slurm"

    def __init__(self, runtime: ClusterRuntime, inventory: Callable[[], Any]):
        self.runtime, self._inventory = runtime, inventory

    def read(self):
        return self._inventory()

    def utilization(self):
        return self.runtime.utilization()

    def processes(self) -> dict:
        return {}
