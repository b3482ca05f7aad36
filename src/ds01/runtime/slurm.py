"""Slurm's command-line clients, one call each (cluster mode, issue 18).

The head submits and cancels jobs and reads their state; an agent reads the job it is asked to
act for. Text parsing is pure (``policy/slurm.py``); this module only runs the commands, with
``SLURM_CONF`` from the config and a timeout, and maps a failure to ``SchedulerFailure``.
"""

from __future__ import annotations

import os
import subprocess
from typing import Sequence

from ds01.errors import SchedulerFailure
from ds01.policy import slurm as sp


class SlurmCli:
    def __init__(self, slurm_conf: str = "", timeout: float = 10.0):
        self.env = {**os.environ, **({"SLURM_CONF": slurm_conf} if slurm_conf else {})}
        self.timeout = timeout

    def _run(self, argv: Sequence[str], ok_codes: tuple[int, ...] = (0,)) -> str:
        try:
            out = subprocess.run(list(argv), capture_output=True, text=True, env=self.env,
                                 timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise SchedulerFailure(f"{argv[0]} is not installed on this host",
                                   "install Slurm's client commands (Debian: slurm-client)") from None
        except subprocess.TimeoutExpired:
            raise SchedulerFailure(f"Slurm did not answer '{argv[0]}' within {self.timeout:.0f}s",
                                   "check slurmctld ('scontrol ping')") from None
        if out.returncode not in ok_codes:
            msg = (out.stderr or out.stdout).strip().splitlines()
            raise SchedulerFailure(f"{argv[0]} failed: {msg[-1] if msg else 'exit ' + str(out.returncode)}",
                                   "check slurmctld ('scontrol ping') and the partition in the config")
        return out.stdout

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, args: list[str]) -> int:
        """``sbatch`` with ``args`` (from ``policy.slurm.submit_args``); the new job's id."""
        return sp.parse_submit(self._run(["sbatch", *args]))

    def cancel(self, job_id: int) -> None:
        """Idempotent: an already finished job is not an error."""
        try:
            self._run(["scancel", str(int(job_id))])
        except SchedulerFailure as e:
            if "Invalid job id" not in e.message and "already completing" not in e.message:
                raise

    def job(self, job_id: int) -> sp.SlurmJob | None:
        """The job as ``scontrol show job -d`` reports it; None when Slurm no longer knows it."""
        try:
            text = self._run(["scontrol", "show", "job", "-d", "-o", str(int(job_id))])
        except SchedulerFailure as e:
            if "Invalid job id" in e.message:
                return None
            raise
        try:
            jobs = sp.parse_jobs(text)
        except ValueError as e:
            raise SchedulerFailure(f"cannot read job {job_id} from scontrol: {e}") from None
        jobs = [j for j in jobs if j.id == int(job_id)]
        if len(jobs) > 1:
            raise SchedulerFailure(f"Slurm's record of job {job_id} is ambiguous; nothing is decided from it")
        return jobs[0] if jobs else None

    def jobs(self, partition: str) -> list[sp.SlurmJob]:
        """Every job Slurm knows in ``partition`` (live, and recently ended within MinJobAge)."""
        text = self._run(["scontrol", "show", "job", "-d", "-o"])
        # one record at a time: a user's odd job (a name imitating a record) cannot hide the
        # others; an id seen twice is left out, and callers confirm by id before acting
        found: dict[int, sp.SlurmJob] = {}
        twice: set[int] = set()
        for line in text.splitlines():
            try:
                jobs = sp.parse_jobs(line)
            except ValueError:
                continue
            for j in jobs:
                if j.id in found:
                    twice.add(j.id)
                else:
                    found[j.id] = j
        return [j for i, j in found.items() if i not in twice and j.partition == partition]

    # -- nodes -----------------------------------------------------------------------------
    def nodes(self) -> list[sp.SlurmNode]:
        try:
            return sp.parse_nodes(self._run(["scontrol", "show", "node", "-o"]))
        except ValueError as e:
            raise SchedulerFailure(f"cannot read Slurm's nodes: {e}") from None

    def drain(self, node: str, reason: str) -> None:
        self._run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}"])

    def resume(self, node: str) -> None:
        self._run(["scontrol", "update", f"NodeName={node}", "State=RESUME"])

    # -- configuration ---------------------------------------------------------------------
    def show_config(self) -> dict[str, str]:
        return sp.parse_config(self._run(["scontrol", "show", "config"]))

    def reconfigure(self) -> None:
        self._run(["scontrol", "reconfigure"])

    def sacctmgr(self, args: list[str]) -> str:
        return self._run(["sacctmgr", "-i", "-n", "-P", *args])
