"""Asking on a terminal (questionary), shared by the wizards and their steps."""

from __future__ import annotations

from typing import Any

import click


def ask(question) -> Any:
    """Run a questionary question; Ctrl-C / Esc aborts the wizard (exit 130)."""
    answer = question.ask()
    if answer is None:
        raise click.exceptions.Abort()
    return answer
