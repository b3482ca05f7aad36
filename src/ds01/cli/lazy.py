"""What command modules need from the client, imported only when a command runs (so ``--help``
never loads the socket client). Requests themselves are the functions of ``ds01.client.api``."""

from __future__ import annotations


def Client():  # noqa: N802 - stands in for the class
    from ds01.client.http import Client as _Client

    return _Client()
