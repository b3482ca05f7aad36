"""``ds01 concepts``: the ideas behind DS01 in plain words (also reused by the wizards' --explain)."""

from __future__ import annotations

import click

_TEXT = """\
DS01 in plain words
===================

You share one big GPU server with your lab. DS01 gives each of you your own
isolated environment on it, without you having to know Docker.

Three things to know
--------------------
  Workspace   A folder that is yours and permanent: ~/workspace/<project>.
              Your code, notebooks, data and results live here. Inside a
              container you see it as /workspace. Nothing DS01 does to
              containers ever deletes or changes it.
  Image       A frozen recipe for an environment: Python, CUDA, PyTorch or
              TensorFlow, and the packages in your requirements.txt. It is
              built from your project's Dockerfile and can be rebuilt any time.
  Container   A running copy of an image, with your workspace and (if you asked)
              GPUs attached. It is where your code runs. It is temporary.

The ephemeral model
-------------------
  Temporary:  containers. Start one when you work, retire it when you stop.
  Permanent:  your workspace, your Dockerfile and requirements.txt, your
              images, and your git history.
  So: if you "pip install" something by hand inside a container, it is gone
  when the container is retired. Put it in requirements.txt (or let
  'container-retire <project> --save-packages' add it for you) and the next
  launch has it. Save results under /workspace, never elsewhere.

Which command when
------------------
  Wizards (L4), what you type day to day:
    user-setup                 check your account once: workspace, git, SSH
    project-init <project>     new project: folders, Dockerfile, git, README
    project-launch <project>   build the image if needed, start, open a shell
  Shortcuts (L3):
    container-deploy <project> create + start a container
    container-retire <project> stop + remove it and free its GPUs
  Building blocks (L2), one step each:
    container-create/start/run/stop/remove/list   one container step
    image-create/list/update/delete               your images
    dir-create, git-init, readme-create           project files, no container
  The wizards only combine the building blocks; use whichever you like.

GPUs and fair share
-------------------
  GPUs are shared. A container gets whole GPUs or slices of one (MIG), only
  while it exists, and only those it was given: you cannot see other GPUs.
  Each user and group has limits. When the server is full (not your limit),
  '--queue' waits for a GPU instead of failing; waiting requests are served
  fairly, with people who used less recently going first.
  Be kind: retire containers you no longer use, so their GPUs go back to the
  pool. Your lab may stop idle containers; your workspace always stays.

Next: 'user-setup', then 'project-init <project>'. Every command has --help.
"""


def concepts_text() -> str:
    """The explanation printed by ``ds01 concepts`` (plain text, about 60 lines)."""
    return _TEXT


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def concepts() -> None:
    """Containers, workspaces and images, in plain words.

    \b
    Example:
      ds01 concepts | less
    """
    click.echo(concepts_text(), nl=False)
