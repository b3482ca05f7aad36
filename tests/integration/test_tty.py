"""container-run with a real terminal (pexpect): prompt, resize, Ctrl-C, exit code."""

from __future__ import annotations

import time

import pexpect

from .harness import BIN, USERS, unique_project


def test_interactive_shell_resize_ctrl_c_and_exit_code(daemon, projects):
    p = unique_project("tty")
    projects.append(("alice", p))
    assert daemon.run("alice", "container-create", p).returncode == 0
    env = f"DS01_ROOT={daemon.root} TERM=xterm PATH={BIN}:/usr/bin:/bin"
    child = pexpect.spawn("runuser", ["-u", USERS["alice"], "--", "env", *env.split(), str(BIN / "container-run"), p],
                          encoding="utf-8", timeout=30, dimensions=(30, 100))
    try:
        child.expect(r"\$ ")  # the prompt: the shell is reading from the terminal now
        child.sendline("echo ready-$((6*7))")
        child.expect("ready-42")
        child.sendline("stty size")
        child.expect(r"30 100")
        child.setwinsize(40, 120)
        child.sendline("sleep 0.3; stty size")
        child.expect(r"40 120")
        child.sendline("sleep 300")
        time.sleep(1)  # let sleep become the foreground process first
        child.sendcontrol("c")  # reaches the process in the container, not the CLI
        child.sendline("echo after-$((1+1))")
        child.expect("after-2")
        child.sendline("exit 9")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 9, child.before
