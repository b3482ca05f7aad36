"""The user's own CLI defaults: ``$XDG_CONFIG_HOME/ds01/config.yaml`` (default
``~/.config/ds01/config.yaml``), read by the CLI as the user; the daemon never reads it.

    # ~/.config/ds01/config.yaml
    mail_on_job_end: true     # job-submit mails me when a job ends (as --mail; --no-mail: not)

A missing file means the built-in defaults. An unknown key or a value of the wrong type is an
error naming the file and key (a typo would otherwise be silently ignored).
"""

from __future__ import annotations

import os
from typing import Any

# key -> (type, default)
KEYS: dict[str, tuple[type, Any]] = {
    "mail_on_job_end": (bool, False),
}


def path() -> str:
    from ds01.projects.workspace import current_user

    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(current_user()[1], ".config")
    return os.path.join(base, "ds01", "config.yaml")


def load(file: str | None = None) -> dict[str, Any]:
    """Every key with its value (the default where the file does not set it)."""
    from ds01.errors import InvalidInput

    file = file or path()
    out = {k: default for k, (_t, default) in KEYS.items()}
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return out
    except OSError as e:
        raise InvalidInput(f"{file}: cannot read it ({e.strerror})") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidInput(f"{file}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return out
    if not isinstance(data, dict):
        raise InvalidInput(f"{file}: expected 'key: value' lines", "e.g. mail_on_job_end: true")
    for key, value in data.items():
        if key not in KEYS:
            raise InvalidInput(f"{file}: unknown key {key!r}", f"known keys: {', '.join(KEYS)}")
        want = KEYS[key][0]
        if not isinstance(value, want):
            raise InvalidInput(f"{file}: {key} must be {'true or false' if want is bool else want.__name__}")
        out[key] = value
    return out
