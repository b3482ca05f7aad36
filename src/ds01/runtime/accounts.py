"""Pure helpers to give a container user a passwd/group entry (so ``whoami`` works)."""

from __future__ import annotations

from ds01.runtime.base import Account

MINIMAL_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
MINIMAL_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def merge_account(passwd: str | None, group: str | None, acct: Account) -> tuple[str, str]:
    """Return (passwd, group) texts containing ``acct``, replacing any entry with the same name
    or id (an image's own user 1000 must not shadow the caller)."""
    pw_lines = [
        line for line in (passwd or MINIMAL_PASSWD).splitlines()
        if line and not _clashes(line, acct.name, acct.uid, id_field=2)
    ]
    pw_lines.append(f"{acct.name}:x:{acct.uid}:{acct.gid}:{acct.name}:{acct.home}:{acct.shell}")
    gr_lines = [
        line for line in (group or MINIMAL_GROUP).splitlines()
        if line and not _clashes(line, acct.group, acct.gid, id_field=2)
    ]
    gr_lines.append(f"{acct.group}:x:{acct.gid}:")
    return "\n".join(pw_lines) + "\n", "\n".join(gr_lines) + "\n"


def _clashes(line: str, name: str, ident: int, id_field: int) -> bool:
    parts = line.split(":")
    if len(parts) <= id_field:
        return False
    return parts[0] == name or parts[id_field] == str(ident)


# The root daemon reads these two files out of any image a user names: bounded, so an image
# with a huge /etc/passwd cannot cost the daemon memory or disk (real ones are a few KiB).
MAX_ACCOUNT_FILE_BYTES = 4 * 1024**2
MAX_ACCOUNT_FILE_LINES = 50_000
# image id -> (passwd, group) cache: bounded by the bytes it holds, least recently used out first
ACCOUNT_CACHE_BYTES = 32 * 1024**2


def check_account_text(path: str, text: str, image: str) -> str:
    """``text`` (already at most MAX_ACCOUNT_FILE_BYTES) if it has at most
    MAX_ACCOUNT_FILE_LINES lines; else PolicyDenied naming the image."""
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if lines > MAX_ACCOUNT_FILE_LINES:
        raise too_large(path, image, f"{lines} lines; the limit is {MAX_ACCOUNT_FILE_LINES}")
    return text


def too_large(path: str, image: str, detail: str):
    from ds01.errors import PolicyDenied

    return PolicyDenied(f"the image {image!r} has an oversized {path} ({detail}); DS01 refuses it",
                        "use an image whose /etc/passwd and /etc/group are ordinary (a few KiB)")


class AccountCache:
    """Thread-safe LRU of image id -> (passwd, group) texts, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int = ACCOUNT_CACHE_BYTES):
        import threading
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.bytes = 0
        self._d: OrderedDict[str, tuple[tuple[str | None, str | None], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str | None, str | None] | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                return None
            self._d.move_to_end(key)
            return hit[0]

    def put(self, key: str, value: tuple[str | None, str | None]) -> None:
        size = sum(len(v) for v in value if v) + len(key)
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._d[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, n) = self._d.popitem(last=False)
                self.bytes -= n

    def __len__(self) -> int:
        return len(self._d)
