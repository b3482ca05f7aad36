"""Every CLI command, by name, with the module that defines it (imported only when run).

Keeping this table free of imports is what makes ``--help`` instant: listing commands never loads
Docker, NVML, pydantic or rich.
"""

from __future__ import annotations

# name -> ("module:attribute", one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    # L2: containers
    "container-create": ("ds01.cli.commands.containers:create", "Create (not start) the container of a project"),
    "container-start": ("ds01.cli.commands.containers:start", "Start a project's container"),
    "container-run": ("ds01.cli.commands.containers:run", "Run a shell or a command in a project's container"),
    "container-attach": ("ds01.cli.commands.containers:attach", "Open another shell in a running container"),
    "container-stop": ("ds01.cli.commands.containers:stop", "Stop a project's container"),
    "container-remove": ("ds01.cli.commands.containers:remove", "Remove a project's container (never the workspace)"),
    "container-list": ("ds01.cli.commands.containers:list_", "List your containers"),
    "container-stats": ("ds01.cli.commands.containers:stats", "CPU, memory and pids of your running containers"),
    "container-ssh": ("ds01.cli.commands.ssh:container_ssh", "SSH into a project's container (an OpenSSH ProxyCommand)"),
    "vscode-setup": ("ds01.cli.commands.ssh:vscode_setup", "Your laptop's ~/.ssh/config for SSH / VS Code into a container"),
    # L2: project helpers (run in the CLI as the user; no daemon)
    "dir-create": ("ds01.cli.commands.projects:dir_create", "Create a project's folders in ~/workspace (never overwrites)"),
    "git-init": ("ds01.cli.commands.projects:git_init", "Make a project a git repository with a first commit"),
    "readme-create": ("ds01.cli.commands.projects:readme_create", "Write a project's README: layout and how to launch it"),
    # L2: images (built by the daemon; the Dockerfile is written as the user)
    "image-create": ("ds01.cli.commands.images:create", "Write a project's Dockerfile and build its image"),
    "image-update": ("ds01.cli.commands.images:update", "Add/remove packages of a project's image and rebuild it"),
    "image-list": ("ds01.cli.commands.images:list_", "List your images, or the catalog of framework images"),
    "image-delete": ("ds01.cli.commands.images:delete", "Delete a project's image (never the workspace)"),
    # L3: orchestrators (one daemon call each; rollback in the daemon)
    "container-deploy": ("ds01.cli.commands.workflows:container_deploy", "Create + start a project's container, then open a shell"),
    "container-retire": ("ds01.cli.commands.workflows:container_retire", "Stop + remove a project's container, free its GPUs"),
    # L4: wizards (interactive on a terminal, or all by flags with --yes)
    "user-setup": ("ds01.cli.commands.wizards:user_setup", "Check your account once: workspace, daemon, git, SSH"),
    "project-init": ("ds01.cli.commands.wizards:project_init", "New project: folders, requirements, Dockerfile, README, git"),
    "project-launch": ("ds01.cli.commands.wizards:project_launch", "Build the image if needed, start the container, open a shell"),
    # admin
    "admin": ("ds01.cli.commands.admin:admin", "Admin tasks: dashboard, limits, reload, users, usage, events, doctor, …"),
    # GPUs and fair share
    "gpus": ("ds01.cli.commands.gpus:gpus", "Every GPU / MIG instance and who holds it"),
    "check-limits": ("ds01.cli.commands.gpus:check_limits", "Your limits, current usage and what is left"),
    "quota": ("ds01.cli.commands.gpus:check_limits", "Alias of check-limits"),
    "gpu-queue": ("ds01.cli.commands.gpus:gpu_queue", "Your requests waiting for a GPU (--cancel ID)"),
    # batch jobs on the fair queue (issue 14)
    "job-submit": ("ds01.cli.commands.jobs:submit", "Run a command as a batch job (waits for GPUs, keeps its output)"),
    "job-list": ("ds01.cli.commands.jobs:list_", "Your jobs: queued and running (--all: ended too)"),
    "job-show": ("ds01.cli.commands.jobs:show", "One job: state, reason, command, image id, git commit"),
    "job-logs": ("ds01.cli.commands.jobs:logs", "A job's output, while it runs and after (-f follows)"),
    "job-cancel": ("ds01.cli.commands.jobs:cancel", "Cancel queued or running jobs"),
    "job-rerun": ("ds01.cli.commands.jobs:rerun", "Run a job again: same image id, command and resources"),
    # seeing the lab
    "status": ("ds01.cli.commands.status:status", "What the machine is doing: GPUs, holders, queue, your containers"),
    "events": ("ds01.cli.commands.status:events", "What happened: changes, denials, lifecycle actions"),
    "usage": ("ds01.cli.commands.status:usage", "GPU-hours and container-hours per user, group or project"),
    "admin-dashboard": ("ds01.cli.commands.status:admin_dashboard", "(admins) Status for everyone, near limits, lifecycle"),
    # lifecycle: idle reclaim, max runtime (issue 6)
    "container-keepalive": ("ds01.cli.commands.lifecycle:keepalive", "Keep a running container from an idle stop for a while"),
    "admin-exempt": ("ds01.cli.commands.lifecycle:exempt", "(admins) Exempt a user from idle stops / max runtime"),
    # misc
    "whoami": ("ds01.cli.commands.misc:whoami", "Show who the daemon thinks you are"),
    "concepts": ("ds01.cli.commands.concepts:concepts", "Containers, workspaces and images, in plain words"),
}

# Nouns that may be written as a separate word: ``ds01 container create`` == ``ds01 container-create``.
NOUNS = sorted({name.split("-", 1)[0] for name in COMMANDS if "-" in name})
