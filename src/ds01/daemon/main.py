"""``ds01d``: the root daemon, the only process that talks to Docker.

    ds01d                       run with /etc/ds01/config.yaml (or embedded defaults)
    ds01d --root DIR            relocate config, socket, state and logs under DIR (tests)
    ds01d --check-config FILE   validate a config file and exit
    ds01d --print-default-config
    ds01d --init-state          start with a new state DB when the present one is refused (moved aside)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ds01.errors import ConfigError, DS01Error
from ds01.paths import Paths

if TYPE_CHECKING:  # the daemon's modules load lazily: --check-config needs none of them
    from aiohttp import web

    from ds01.daemon.metrics import Metrics
    from ds01.daemon.services import Services
    from ds01.services.context import Context

log = logging.getLogger("ds01d")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ds01d", description="DS01 daemon (runs as root; owns Docker).")
    p.add_argument("--root", default=os.environ.get("DS01_ROOT"),
                   help="relocate config, socket, state and logs under this directory (env DS01_ROOT)")
    p.add_argument("--config", help="config file (default: <root>/etc/ds01/config.yaml)")
    p.add_argument("--socket", help="socket path (default: <root>/run/ds01/ds01.sock)")
    p.add_argument("--check-config", metavar="FILE", help="validate FILE and exit (0 = valid)")
    p.add_argument("--print-default-config", action="store_true", help="print the embedded defaults as YAML")
    p.add_argument("--init-state", action="store_true",
                   help="if the state database is not a DS01 database of a known version, move it aside "
                        "and start with a new one (its history is lost)")
    p.add_argument("--docker-url", help="Docker Engine URL (default: the config's engine.url, else DOCKER_HOST)")
    p.add_argument("--node", metavar="NAME",
                   help="cluster mode: run the node agent of Slurm node NAME instead of the head (docs/scale-out.md)")
    p.add_argument("--listen", metavar="ADDR:PORT",
                   help="with --node: the address to listen on (default: the node's NodeAddr and cluster.agent_port)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from ds01.daemon.reload import ignore_sighup

    ignore_sighup()  # a SIGHUP while starting must not kill the daemon; serve() makes it reload
    args = parse_args(argv)
    from ds01.models.config import default_config_yaml, load_config, parse_config

    if args.print_default_config:
        sys.stdout.write(default_config_yaml())
        return
    if args.check_config:
        try:
            text = Path(args.check_config).read_text()
            parse_config(text, args.check_config)
        except OSError as e:
            print(f"ds01d: cannot read {args.check_config}: {e.strerror}", file=sys.stderr)
            sys.exit(2)
        except ConfigError as e:
            print(f"ds01d: {e.message}", file=sys.stderr)
            sys.exit(2)
        print(f"{args.check_config}: ok")
        return

    paths = Paths.under(args.root)
    cfg_path = Path(args.config) if args.config else paths.config
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        print(f"ds01d: refusing to start: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=cfg.daemon.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s ds01d %(levelname)s %(message)s")
    if os.geteuid() != 0:
        log.warning("ds01d is not running as root: it cannot act as other users")
    socket_path = Path(args.socket) if args.socket else paths.socket
    if args.node:
        _run_agent(cfg, args, paths)
        return
    try:
        docker_url = args.docker_url or cfg.engine.url or os.environ.get("DOCKER_HOST")
        asyncio.run(serve(cfg, paths, socket_path, docker_url, cfg_path, args.init_state))
    except DS01Error as e:
        print(f"ds01d: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(1)


def _run_agent(cfg, args, paths: Paths) -> None:
    from ds01.daemon.agent import serve_node

    try:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        serve_node(cfg, args.node, args.listen, args.docker_url or cfg.engine.url or os.environ.get("DOCKER_HOST"),
                   str(paths.state_dir / f"node-{args.node}"))
    except DS01Error as e:
        print(f"ds01d --node: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"ds01d --node: cannot listen: {e.strerror}", file=sys.stderr)
        sys.exit(1)


def build_services(ctx: Context, on_release: Callable[[], None] | None = None,
                   config_path: Path | None = None, placement=None) -> Services:
    """The composition root: every service, built once, each given its collaborators when it is
    constructed. ``on_release`` is called (from worker threads) after GPU devices were released."""
    from ds01.daemon.services import Services
    from ds01.services.containers import ContainerService
    from ds01.services.disk import DiskService
    from ds01.services.gpus import GpuService
    from ds01.services.images import ImageService
    from ds01.services.jobs import JobService
    from ds01.services.lifecycle import LifecycleService
    from ds01.services.ssh import SshService
    from ds01.services.status import StatusService
    from ds01.services.usage import UsageService

    containers: ContainerService | None = None

    def remove_container(actor, who, project: str) -> None:
        # image-delete --force: through ContainerService, so its side effects (the queue's
        # wake-up on released devices) happen too; bound once ``containers`` exists below
        assert containers is not None
        containers.remove(actor, who, project, force=True)

    images = ImageService(ctx, remove_container=remove_container)
    containers = ContainerService(ctx, on_release=on_release, images=images, placement=placement)
    jobs = JobService(ctx, containers, images=images, on_release=on_release)
    disk = DiskService(ctx, containers.limits_for)
    from ds01.services.cluster import ClusterService

    cluster = ClusterService(containers)
    gpu = GpuService(containers, jobs=jobs, disk=disk, cluster=cluster)
    from ds01.services.charts import ChartService

    status = StatusService(containers, gpu)
    return Services(ctx=ctx, images=images, containers=containers, gpu=gpu, jobs=jobs,
                    lifecycle=LifecycleService(ctx, containers), status=status,
                    usage=UsageService(ctx, containers), config_admin=_config_admin(ctx, config_path),
                    ssh=SshService(ctx, containers), charts=ChartService(ctx, status), disk=disk, cluster=cluster)



def _config_admin(ctx: Context, config_path: Path | None):
    from ds01.services.config_admin import ConfigAdmin

    return None if config_path is None else ConfigAdmin(ctx, config_path)


def build_app(s: Services, metrics: Metrics | None = None) -> web.Application:
    """The API application: identity/audit middleware, every route table, and (with ``metrics``)
    the latency middleware, outermost so it times refusals too."""
    from aiohttp import web

    from ds01.daemon.http import api_middleware
    from ds01.daemon.routes import admin, containers, gpus, images, jobs, lifecycle, status, system
    from ds01.daemon.routes import exec as exec_
    from ds01.daemon.routes import pulls, ssh

    middlewares = [] if metrics is None else [metrics.middleware()]
    app = web.Application(middlewares=[*middlewares, api_middleware(s.ctx)],
                          client_max_size=s.ctx.config.daemon.max_body)
    for table in (system, containers, gpus, exec_, ssh, lifecycle, images, pulls, status, jobs, admin):
        app.add_routes(table.routes(s))
    if metrics is not None:
        async def precreate(app: web.Application) -> None:  # a series per route, before any request
            metrics.precreate_endpoints(app)

        app.on_startup.append(precreate)
    return app


async def serve(cfg, paths: Paths, socket_path: Path, docker_url: str | None, cfg_path: Path,
                init_state: bool = False) -> None:
    from aiohttp import web

    from ds01.daemon.loops import Waker, run_ticks
    from ds01.daemon.metrics import Metrics
    from ds01.daemon.observability import Observability
    from ds01.errors import RuntimeFailure
    from ds01.runtime.docker import DockerBackend
    from ds01.services.context import Context
    from ds01.services.events import EventLog
    from ds01.state.db import Store

    loop = asyncio.get_running_loop()
    # Every Docker call runs in a worker thread; allow many at once (concurrent creates).
    loop.set_default_executor(ThreadPoolExecutor(max_workers=48, thread_name_prefix="ds01d-worker"))
    from ds01.daemon import connections, filemodes

    from ds01.daemon import pidlock

    pidlock.acquire(paths.state_dir / "ds01d.pid")  # one daemon per root, before anything is touched
    nofile, _ = connections.raise_nofile_limit()  # each connection is a descriptor (issue 15)
    connections.quiet_accept_errors(loop)
    # private by default: owner and mode of every directory and file we own, at each start
    own_socket_dir = socket_path.parent if socket_path.parent == paths.socket.parent else None
    await asyncio.to_thread(filemodes.enforce, paths, own_socket_dir)
    store = await asyncio.to_thread(Store, paths.state_db, init_state)  # refuses a non-DS01 file
    events = EventLog(paths.events, store, cfg.daemon.events_max_bytes, cfg.daemon.events_keep)
    try:
        runtime = await asyncio.to_thread(DockerBackend, docker_url, int(cfg.engine.call_timeout),
                                          str(paths.state_dir / "accounts"), float(cfg.engine.timeout))
        await asyncio.to_thread(runtime.client.ping)
    except Exception as e:  # fail closed: without the engine nothing can be served correctly
        raise RuntimeFailure(f"cannot reach the Docker Engine: {e}", "start dockerd, then start ds01d again")
    from ds01.gpu import make_source

    placement = None
    mounts_dir: str | None = str(paths.state_dir / "mounts")
    if cfg.cluster.engine == "slurm":  # issue 18: Slurm places, node agents run the containers
        runtime, placement, gpu_source, inventory = await asyncio.to_thread(_cluster_parts, cfg, runtime, store)
        mounts_dir = None  # the workspace is bound on its node from shared storage (the agent checks it)
    else:
        gpu_source = make_source(cfg.gpu)
        inventory = await asyncio.to_thread(gpu_source.read)
    log.info("GPU inventory (%s): %d device(s), driver %s", getattr(gpu_source, "kind", "?"),
             len(inventory.allocatable), inventory.driver_version)
    clock = await asyncio.to_thread(_steady_clock, store)  # a step of the wall clock is not idle time
    ctx = Context(config=cfg, store=store, runtime=runtime, events=events, instance=cfg.daemon.instance, clock=clock,
                  gpu_source=gpu_source, inventory=inventory, mounts_dir=mounts_dir)
    from ds01.images.catalog_refresh import OVERLAY_NAME, set_overlay_path

    set_overlay_path(str(paths.state_dir / OVERLAY_NAME))  # `admin catalog refresh` writes, the catalog merges
    waker = Waker(loop)  # a release wakes the periodic loop, so the queue is served now
    if placement is not None:
        placement.config_source = lambda: ctx.config  # a reload applies to placement at once
    services = build_services(ctx, on_release=waker.kick, config_path=cfg_path, placement=placement)
    if services.config_admin is not None:  # what `ds01 admin doctor` checks of our own files
        services.config_admin.own_files = own_files(paths, cfg_path)
    metrics = Metrics(services, services.status)
    events.listeners.append(metrics.on_event)  # lifecycle actions, queue waits, build durations
    app = build_app(services, metrics)
    from ds01.services.reconcile import reconcile

    summary = await asyncio.to_thread(reconcile, services.containers)
    summary.update(await asyncio.to_thread(services.jobs.recover))  # jobs ran on while we were down
    summary.update(await asyncio.to_thread(services.gpu.recover_serving))  # a queue entry served mid-crash
    summary.update(await asyncio.to_thread(services.cluster.reconcile))  # cluster mode: books = squeue
    events.emit("daemon.start", target=str(socket_path), data={"config": str(cfg_path), **summary})
    await asyncio.to_thread(filemodes.enforce, paths, own_socket_dir, False)  # the files just created
    # (never more than the descriptors allow: accept must not fail for lack of them)
    max_conns = min(cfg.daemon.max_connections, max(16, nofile - 512))
    if max_conns < cfg.daemon.max_connections:
        log.warning("daemon.max_connections lowered to %d: only %d open files are allowed", max_conns, nofile)
    guard = connections.ConnectionGuard(
        "api socket", max_conns, cfg.daemon.max_connections_per_user,
        cfg.daemon.admin_connection_reserve, cfg.daemon.connection_idle_timeout,
        is_admin=lambda uid: is_admin_uid(uid, services.ctx.config.admin_group),
        on_refused=connections.refusal_auditor(events, "api socket"))
    app.middlewares.insert(0, guard.middleware())  # outermost: marks the connection busy first

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(socket_path.parent, 0o755)
    if socket_path.exists() or socket_path.is_symlink():
        socket_path.unlink()
    site = connections.unix_site(runner, str(socket_path), guard)
    await site.start()
    os.chmod(socket_path, cfg.daemon.socket_mode)
    log.info("listening on %s (instance %s; %s; up to %d connections, %d per user; %d open files)", socket_path,
             ctx.instance, ", ".join(f"{k}={v}" for k, v in summary.items()), max_conns,
             cfg.daemon.max_connections_per_user, nofile)

    obs = Observability(services, metrics)
    await obs.start(cfg.daemon.tick_interval)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from ds01.daemon.reload import install as install_reload

    install_reload(loop, services, socket_path, obs, cfg.daemon.tick_interval)  # SIGHUP = reload
    ticker = asyncio.create_task(run_ticks(services, waker, cfg.daemon.tick_interval, stop))
    timekeeper = asyncio.create_task(keep_time(clock, store, events, stop))
    await stop.wait()
    waker.kick()
    await ticker
    await timekeeper
    log.info("shutting down")
    services.lifecycle.close()
    if services.disk is not None:
        services.disk.close()
    await obs.stop()
    events.emit("daemon.stop", target=str(socket_path))
    guard.close()
    await runner.cleanup()
    store.close()


def _cluster_parts(cfg, local, store):
    """Cluster mode's runtime (every node's agent), placement (Slurm), and inventory (Slurm's GRES)."""
    from ds01.runtime.cluster import ClusterGpuSource, ClusterRuntime
    from ds01.runtime.node_client import NodeClient
    from ds01.services.placement import SlurmPlacement
    from ds01.runtime.slurm import SlurmCli

    c = cfg.cluster
    slurm = SlurmCli(c.slurm_conf)
    nodes = {n.name: NodeClient(n.name, n.addr or n.name, c.agent_port, float(c.agent_timeout), c.munge_socket,
                                c.head_uid) for n in slurm.nodes()}

    def node_of(cid: str) -> str | None:
        rec = store.container_by_docker_id(cid)
        return rec.node if rec is not None else None

    runtime = ClusterRuntime(local, nodes, node_of)
    placement = SlurmPlacement(cfg, slurm, cfg.daemon.instance, runtime)
    log.info("cluster mode: Slurm partition %s, nodes %s", c.partition, ", ".join(sorted(nodes)) or "none")
    return runtime, placement, ClusterGpuSource(runtime, placement.inventory), placement.inventory()


def _steady_clock(store):
    from ds01.policy.clock import Mark
    from ds01.services.clock import SteadyClock

    try:
        saved = store.clock_mark()
        mark = Mark(float(saved["now"]), float(saved["mono"]), str(saved["boot"])) if saved else None
    except (KeyError, TypeError, ValueError):
        mark = None
    return SteadyClock(mark)


async def keep_time(clock, store, events, stop: asyncio.Event, every: float = 10.0) -> None:
    """Persist the clock's mark (a restart continues DS01 time from it) and make a step of the
    system clock visible: a warning and a ``daemon.clock_step`` event per step."""
    from dataclasses import asdict

    from ds01.policy.clock import TOLERANCE

    reported = 0.0
    while not stop.is_set():
        try:
            await asyncio.to_thread(store.save_clock_mark, asdict(clock.mark()))
        except DS01Error as e:
            log.warning("could not save the clock mark: %s", e.message)
        if not clock.stepped():
            reported = 0.0
        elif abs(clock.offset - reported) > TOLERANCE:
            reported = clock.offset
            log.warning("the system clock is %+.0f s from DS01's time (it was stepped): deadlines count the time "
                        "that really passed, and DS01's time converges by at most 1%% of it", reported)
            try:
                events.emit("daemon.clock_step", data={"offset_s": round(reported, 1)})
            except DS01Error as e:
                log.warning("could not record the clock step: %s", e.message)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


def is_admin_uid(uid: int, admin_group: str) -> bool:
    from ds01.services.identity import caller_from_uid

    return caller_from_uid(uid, None, admin_group).is_admin


def own_files(paths: Paths, cfg_path: Path) -> dict[str, tuple[str, int]]:
    """The daemon's own paths and the mode bits none of them may have (``ds01 admin doctor``)."""
    return {"state-dir": (str(paths.state_dir), 0o027), "state-db": (str(paths.state_db), 0o077),
            "log-dir": (str(paths.log_dir), 0o027), "events": (str(paths.events), 0o077),
            "config": (str(cfg_path), 0o022)}


if __name__ == "__main__":  # pragma: no cover
    main()
