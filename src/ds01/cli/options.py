"""The click options shared by several commands, defined once (same flag, same help, same
validation everywhere)."""

from __future__ import annotations

import click

CTX = {"help_option_names": ["-h", "--help"]}

# The generator's preset names (ds01.images.dockerfile.PRESETS; a unit test keeps them equal),
# spelled out so that '--help' does not import the generator (pydantic, packaging).
PRESET_NAMES = ("audio", "cv", "llm", "nlp", "rl", "tabular")

json_opt = click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")


def user_opt(noun: str):
    """``--user USER`` (admins act on another user's NOUN)."""
    return click.option("--user", "user", metavar="USER", help=f"(admins) act on USER's {noun}")


def gpu_options(f):
    """``--gpus N | --gpu-profile P | --mig N`` and ``--queue``; pass the first three to
    :func:`gpu_request`. Numbers are not range-checked here: the daemon's allocator says
    precisely what this host and your limits allow."""
    f = click.option("--queue", is_flag=True, help="if no GPU is free now, wait in the fair-share queue")(f)
    f = click.option("--mig", type=int, metavar="N", help="N MIG instances (smallest that fit)")(f)
    f = click.option("--gpu-profile", metavar="PROFILE", help="one MIG instance of PROFILE, e.g. 3g.40gb")(f)
    f = click.option("--gpus", type=int, metavar="N", help="N whole GPUs (default: none)")(f)
    return f


def gpu_request(gpus: int | None, gpu_profile: str | None, mig: int | None) -> dict:
    """The GPU part of a request body (only what was given); refuses more than one kind."""
    from ds01.errors import InvalidInput

    given = {k: v for k, v in (("gpus", gpus), ("gpu_profile", gpu_profile), ("mig", mig)) if v is not None}
    if len(given) > 1:
        raise InvalidInput("ask for GPUs one way only: --gpus, --gpu-profile or --mig",
                           "e.g. --gpus 1 for a whole GPU, or --mig 1 for one slice of a GPU")
    return given


def open_option(f):
    return click.option("--open/--background", "open_", default=None,
                        help="open a shell in it afterwards (default on a terminal) / just return")(f)


def explain_opt(f):
    return click.option("--explain", is_flag=True, help="first explain containers, workspaces and images")(f)
