"""Editing the limits in a config file's text, keeping its comments and key order.

Pure text in, text out (``ruamel.yaml`` round-trip mode): ``ds01 admin limits set/unset`` edit the
one config file the admin also edits by hand, rather than a drop-in directory, so there is one
place to read the lab's limits. The result is validated with :func:`ds01.models.config.parse_config`
by the caller before anything is written. Indentation is re-emitted in PyYAML's style (what
``ds01d --print-default-config`` prints): two spaces, list dashes at the parent key's column.
"""

from __future__ import annotations

from typing import Any

from ds01.errors import InvalidInput, NotFound

def limit_keys() -> tuple[str, ...]:
    from ds01.models.config import Limits

    return tuple(Limits.model_fields)


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["max_gpus=2", "memory=32g"]`` → ``{"max_gpus": 2, "memory": "32g"}``: each value read
    as a YAML scalar (numbers, ``true``/``false``, sizes and durations as text for the schema)."""
    import yaml

    keys = limit_keys()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"{item!r} is not KEY=VALUE", "e.g. max_gpus=2 memory=32g idle_timeout=4h")
        check_key(key, keys)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if value is None or isinstance(value, (dict, list)):
            raise InvalidInput(f"{key}: {raw!r} is not a single value",
                               f"to drop a setting use 'ds01 admin limits unset … {key}'")
        out[key] = value
    return out


def check_key(key: str, keys: tuple[str, ...] | None = None) -> None:
    keys = keys or limit_keys()
    if key not in keys:
        import difflib

        close = difflib.get_close_matches(key, keys, n=1)
        raise InvalidInput(f"{key}: not a limit" + (f" (did you mean {close[0]}?)" if close else ""),
                           "limits: " + ", ".join(keys))


def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=2, offset=0)
    return y


def load_rt(text: str) -> Any:
    from ruamel.yaml.comments import CommentedMap

    data = _yaml().load(text) if text.strip() else None
    if data is None:
        return CommentedMap()
    if not isinstance(data, dict):
        raise InvalidInput("the config file's top level is not a mapping")
    return data


def dump_rt(data: Any) -> str:
    import io

    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


def scope_entry(data: Any, user: str | None, group: str | None, create: bool) -> Any:
    """The mapping of limits for the scope (a user's override, a group's ``limits``, or
    ``defaults``), created when ``create``; None when absent and not created."""
    from ruamel.yaml.comments import CommentedMap

    if group is not None:
        for g in data.get("groups") or []:
            if isinstance(g, dict) and g.get("name") == group:
                if g.get("limits") is None:
                    if not create:
                        return None
                    g["limits"] = CommentedMap()
                return g["limits"]
        raise NotFound(f"no limits group named {group!r} in the config",
                       "groups are defined (name, unix_group/members) by editing the config file")
    if user is not None:
        if data.get("users") is None:
            if not create:
                return None
            data["users"] = CommentedMap()
        if data["users"].get(user) is None:
            if not create:
                return None
            data["users"][user] = CommentedMap()
        return data["users"][user]
    if data.get("defaults") is None:
        if not create:
            return None
        data["defaults"] = CommentedMap()
    return data["defaults"]


def edit_limits(text: str, user: str | None, group: str | None, set_: dict[str, Any],
                unset: list[str] | tuple[str, ...]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The new file text and ``{key: {"from": old, "to": new}}`` for what actually changed
    (``None`` = not set at this level). Neither user nor group: the ``defaults``."""
    for k in unset:
        check_key(k)
    data = load_rt(text)
    entry = scope_entry(data, user, group, create=bool(set_))
    changes: dict[str, dict[str, Any]] = {}
    if entry is not None:
        for k, v in set_.items():
            old = entry.get(k)
            if old != v or k not in entry:
                changes[k] = {"from": _plain(old), "to": v}
            entry[k] = v
        for k in unset:
            if k in entry:
                changes[k] = {"from": _plain(entry[k]), "to": None}
                del entry[k]
        if user is not None and group is None and not entry:  # an empty override says nothing
            del data["users"][user]
            if not data["users"]:
                del data["users"]
    return dump_rt(data), changes


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):  # ruamel's ScalarInt/ScalarFloat: plain numbers for JSON and events
        return int(v)
    if isinstance(v, float):
        return float(v)
    return str(v)

