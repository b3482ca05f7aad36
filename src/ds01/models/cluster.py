"""The ``cluster:`` section of the config (issue 18): single server (``engine: local``, the
default) or several GPU servers placed by Slurm (``engine: slurm``; docs/scale-out.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ds01.units import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "local": this server's allocator and fair queue; "slurm": Slurm places every container
    engine: Literal["local", "slurm"] = "local"
    # the partition only DS01 submits to (the head submits as the user with sbatch --uid; slurm.conf
    # keeps others out with a job_submit filter: docs/scale-out.md)
    partition: str = Field("ds01", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # SLURM_CONF for every Slurm command the head and agents run ("" = Slurm's own default)
    slurm_conf: str = ""
    # node agents listen on this TCP port on their node's address (Slurm's NodeAddr)
    agent_port: int = Field(7817, ge=1, le=65535)
    # the uid whose MUNGE credentials an agent accepts: the head's (root)
    head_uid: int = Field(0, ge=0)
    # MUNGE's socket ("" = munged's default, /run/munge/munge.socket.2)
    munge_socket: str = ""
    # a deploy waits this long for Slurm to start its job; then it is queued (or refused)
    place_timeout: Duration = Field(20, gt=0, le=600)
    # one head→agent call (not exec streams)
    agent_timeout: Duration = Field(5, gt=0, le=120)
    # an agent not answering this long: its node is drained in Slurm, resumed when it is back
    drain_after: Duration = Field(15, ge=0)
    # the GRES type requested for whole GPUs (None: any type, `--gres=gpu:N`)
    gres_type: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # DS01 MIG profile -> Slurm GRES type, e.g. {"1g.18gb": "1g.18gb"}
    mig_types: dict[str, str] = {}
    # `ds01 admin cluster sync` writes the slurm.conf keys DS01's policy maps to into this file
    # (Include it from slurm.conf) and runs `scontrol reconfigure`; "" = show the diff only
    slurm_include: str = ""
    # the lab registry (host:port[/prefix]) the head pushes DS01-built images to and nodes pull
    # from; "" = every node already has the images (one shared engine, or built everywhere)
    registry: str = Field("", pattern=r"^([A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?)?$")
