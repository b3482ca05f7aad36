"""SSH into the container (``container-ssh``): OpenSSH's own sshd, in inetd mode (``sshd -i``),
run inside the user's container *as the user*, its stdin/stdout carried by the daemon's exec
stream. Nothing listens: no TCP port on the host, none published by the container.

What the daemon supplies (the choice, and why):

* the image's own ``sshd`` (DS01-made images and the bootstrapped base carry ``openssh-server``);
  an image without one is refused with the fix. A static sshd shipped by the daemon would also
  serve foreign images, but would be a second OpenSSH to keep patched; the image's is the distro's.
* the config (:func:`sshd_config`): public keys only, ``AllowUsers`` the caller, no root, local
  port forwarding only (``ssh -L`` to servers inside the container), sftp as ``internal-sftp``
  (no sftp-server binary needed), the container's environment as ``SetEnv`` (PATH, the venv, the
  GPUs), logs at ERROR on stderr (which the caller's ssh shows).
* a host key per user (``<state>/ssh/<uid>/``, root-only, made once with ``ssh-keygen``): the
  same in every container of that user, so ``known_hosts`` never changes; another user cannot
  read it (it only ever enters that user's own containers).
* the keys: the user's ``~/.ssh/authorized_keys`` on the host, read *as the user* (a child that
  dropped to the user's ids, like the workspace mkdir), at most 64 KiB.

These reach the process through the exec's environment (one exec, no extra round trip); a short
``sh`` wrapper writes them to ``$HOME/.ds01/sshd`` (the container's HOME tmpfs, mode 0700),
unsets the variables and execs sshd. Commands get the environment from ``SetEnv``; login shells
(``ssh P.ds01``, VS Code's terminal) from ``/etc/profile.d/00-ds01-env.sh`` like every other way
in (``ds01.policy.environment``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

from ds01.errors import Conflict, NotFound, PermissionDenied, RuntimeFailure
from ds01.policy.containers import user_env
from ds01.services.context import Context
from ds01.services.exec import ExecSession
from ds01.services.identity import Caller
from ds01.services.workspace import _gids
from ds01.state.db import ContainerRecord

MAX_KEYS = 64 * 1024
_HEAD = "/usr/bin/head"
# where sshd is looked for in the image (first hit wins), then $PATH
PROBE = ('for p in /usr/sbin/sshd /usr/local/sbin/sshd /usr/bin/sshd /sbin/sshd; do '
         '[ -x "$p" ] && { echo "$p"; exit 0; }; done; command -v sshd || exit 127')
WRAPPER = r"""set -e
umask 077
d="${HOME:-/tmp}/.ds01/sshd"
mkdir -p "$d"
for f in host_key authorized_keys sshd_config; do
  case $f in host_key) v=$DS01_SSH_HOST_KEY;; authorized_keys) v=$DS01_SSH_KEYS;; *) v=$DS01_SSH_CONFIG;; esac
  printf '%s\n' "$v" > "$d/$f.$$"; mv -f "$d/$f.$$" "$d/$f"
done
unset DS01_SSH_HOST_KEY DS01_SSH_KEYS DS01_SSH_CONFIG v
exec "$1" -i -e -o LogLevel=ERROR -f "$d/sshd_config" -h "$d/host_key" -o "AuthorizedKeysFile=$d/authorized_keys"
"""
# set by sshd itself, or by the wrapper's variables: never copied into SetEnv
_SSHD_SETS = frozenset({"HOME", "USER", "LOGNAME", "SHELL", "TERM", "MAIL", "PWD", "OLDPWD", "SHLVL", "HOSTNAME"})


def sshd_config(user: str, env: dict[str, str]) -> str:
    """The sshd config for ``user``'s session (pure). ``env`` becomes one ``SetEnv`` line (sshd
    uses only the first one); values sshd's tokenizer cannot carry (quotes, backslashes, control
    characters) are left out."""
    pairs = []
    for k in sorted(env):
        v = env[k]
        if k in _SSHD_SETS or k.startswith(("SSH_", "DS01_SSH_")) or not k.replace("_", "a").isalnum():
            continue
        if any(c in v for c in '"\\\'') or any(ord(c) < 32 for c in v):
            continue
        pairs.append(f'"{k}={v}"')
    lines = [
        "# DS01 container-ssh: sshd -i over the daemon's exec stream (it never listens)",
        "PubkeyAuthentication yes",
        "AuthenticationMethods publickey",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitRootLogin no",
        "PermitEmptyPasswords no",
        f"AllowUsers {user}",
        # DS01 wrote the key files itself, into a 0700 directory, a moment ago
        "StrictModes no",
        "PermitTTY yes",
        "AllowTcpForwarding local",
        "AllowStreamLocalForwarding no",
        "GatewayPorts no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "AllowAgentForwarding yes",
        # no AcceptEnv: the session has the image's environment, not the laptop's locale names
        "Subsystem sftp internal-sftp",
        "PidFile none",
        "UseDNS no",
        "PrintMotd no",
    ]
    if pairs:
        lines.append("SetEnv " + " ".join(pairs))
    return "\n".join(lines)


def read_authorized_keys(who: Caller) -> str:
    """``~/.ssh/authorized_keys`` read as ``who`` (the kernel's permission checks, the user's view
    of symlinks). NotFound when it has no key, PermissionDenied when it is too large."""
    path = os.path.join(who.home, ".ssh", "authorized_keys")
    try:
        proc = subprocess.run([_HEAD, "-c", str(MAX_KEYS + 1), "--", path], user=who.uid, group=who.gid,
                              extra_groups=_gids(who), capture_output=True, timeout=10, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "LANG": "C"})
    except (subprocess.SubprocessError, OSError) as e:
        raise RuntimeFailure(f"could not read your authorized_keys: {e}") from None
    text = proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else ""
    if len(proc.stdout) > MAX_KEYS:
        raise PermissionDenied(f"~/.ssh/authorized_keys is larger than {MAX_KEYS // 1024} KiB",
                               "keep only your public keys in it")
    keys = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#") and "\0" not in ln]
    if not keys:
        raise NotFound("you have no public key in ~/.ssh/authorized_keys on this server",
                       "copy your laptop's public key here (ssh-copy-id); 'vscode-setup' shows every step")
    return "\n".join(keys)


class SshService:
    """Starts the in-container sshd for ``container-ssh`` (see the module doc)."""

    CACHE = 512

    def __init__(self, ctx: Context, containers):
        self.ctx = ctx
        self.containers = containers
        self._lock = threading.Lock()
        # docker id -> (sshd path, container env): both fixed for a container's life
        self._probed: dict[str, tuple[str, dict[str, str]]] = {}

    @property
    def keys_dir(self) -> Path:
        return self.ctx.store.path.parent / "ssh"

    def open(self, actor: Caller, who: Caller, ref: str, *, start: bool) -> ExecSession:
        """Start ``sshd -i`` in ``who``'s running container of ``ref``. With ``start``, a missing
        or stopped container is a :class:`Conflict` with ``details.start`` (and ``details.exists``
        for a stopped one) and no event: the client starts it and asks again. The route records
        every other refusal as an event."""
        try:
            rec = self.containers.exec_target(who, ref, False, actor)
        except (NotFound, Conflict) as e:
            if start:
                raise Conflict(e.message, e.hint, {"start": True, "exists": isinstance(e, Conflict)}) from None
            raise
        sshd, env = self._probe(who, rec)
        keys = read_authorized_keys(who)
        host_key = self.host_key(who)
        exec_env = {**user_env(who, rec.gpus), "DS01_SSH_HOST_KEY": host_key, "DS01_SSH_KEYS": keys,
                    "DS01_SSH_CONFIG": sshd_config(who.name, env)}
        handle = self.ctx.runtime.exec_start(rec.docker_id, ["/bin/sh", "-c", WRAPPER, "ds01-sshd", sshd],
                                             user=f"{who.uid}:{who.gid}", env=exec_env, workdir="/workspace",
                                             tty=False)
        self.ctx.emit("container.ssh", who, rec.project, data={"container": rec.docker_name}, actor=actor)
        # with the container id: a client that vanishes takes sshd's process group with it
        return ExecSession(self.ctx.runtime, handle, rec.project, rec.docker_id or "")

    # -- the image's sshd --------------------------------------------------------------------
    def _probe(self, who: Caller, rec: ContainerRecord) -> tuple[str, dict[str, str]]:
        cid = rec.docker_id or ""
        hit = self._probed.get(cid)
        if hit is not None:
            return hit
        code, out = self._run(who, rec, ["/bin/sh", "-c", PROBE])
        path = out.strip().splitlines()[-1] if out.strip() else ""
        if code != 0 or not path.startswith("/"):
            raise NotFound(
                f"the image of {rec.project} ({rec.image}) has no OpenSSH server (sshd), so container-ssh "
                "cannot open a session in it",
                f"add it: image-update {rec.project} --add-apt openssh-server, then container-retire "
                f"{rec.project} (the next connection starts the new image)")
        info = self.ctx.runtime.inspect(cid)
        env = dict(info.env) if info is not None else {}
        with self._lock:
            if len(self._probed) >= self.CACHE:
                self._probed.pop(next(iter(self._probed)))
            self._probed[cid] = (path, env)
        return path, env

    def _run(self, who: Caller, rec: ContainerRecord, cmd: list[str]) -> tuple[int, str]:
        """A short command as the user; (exit code, stdout)."""
        handle = self.ctx.runtime.exec_start(rec.docker_id or "", cmd, user=f"{who.uid}:{who.gid}",
                                             env=user_env(who, rec.gpus), workdir="/", tty=False)
        session = ExecSession(self.ctx.runtime, handle, rec.project, rec.docker_id or "")
        out = []
        try:
            session.end_input()
            for stream, data in session.frames():
                if stream == 1 and sum(map(len, out)) < 4096:
                    out.append(data)
        except OSError:
            pass
        finally:
            session.close()
        code = session.wait_exit()
        return (code if code is not None else 255), b"".join(out).decode("utf-8", "replace")

    # -- the per-user host key ---------------------------------------------------------------
    def host_key(self, who: Caller) -> str:
        """``who``'s container host key (OpenSSH private key text), made on first use."""
        d = self.keys_dir / str(who.uid)
        key = d / "ssh_host_ed25519_key"
        try:
            return key.read_text()
        except FileNotFoundError:
            pass
        with self._lock:
            if not key.exists():
                self._keygen(who, d, key)
        return key.read_text()

    def public_host_key(self, who: Caller) -> str:
        """The public half (``ssh-ed25519 AAAA… comment``), for a laptop's known_hosts."""
        self.host_key(who)
        return (self.keys_dir / str(who.uid) / "ssh_host_ed25519_key.pub").read_text().strip()

    def _keygen(self, who: Caller, d: Path, key: Path) -> None:
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=d, prefix=".keygen-"))
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"ds01 containers of {who.name}",
                            "-f", str(tmp / "k")], check=True, capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
            os.replace(tmp / "k.pub", d / "ssh_host_ed25519_key.pub")
            os.replace(tmp / "k", key)  # last: its presence means the pair is complete
        except FileNotFoundError:
            raise RuntimeFailure("ssh-keygen is not installed on this server",
                                 "ask an admin to install openssh-client") from None
        except subprocess.SubprocessError as e:
            raise RuntimeFailure(f"could not make the SSH host key: {e}") from None
        finally:
            for p in tmp.glob("*"):
                p.unlink()
            tmp.rmdir()
