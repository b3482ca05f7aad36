"""Email through the admin's SMTP relay (``notify.smtp``), for users who opted in.

Sent from a background thread: a slow or dead relay never holds up the daemon's tick. Failures
are logged, never raised (a lost mail must not change a job's outcome).
"""

from __future__ import annotations

import logging
import smtplib
import threading
from email.message import EmailMessage

from ds01.models.config import SmtpConfig

log = logging.getLogger("ds01d")


def address_of(cfg: SmtpConfig, user: str) -> str:
    return cfg.address.replace("{user}", user)


def send(cfg: SmtpConfig, user: str, subject: str, body: str) -> None:
    """Deliver now (blocking)."""
    msg = EmailMessage()
    msg["From"] = cfg.sender
    msg["To"] = address_of(cfg, user)
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout) as s:
        if cfg.starttls:
            s.starttls()
        s.send_message(msg)


def send_later(cfg: SmtpConfig | None, user: str, subject: str, body: str) -> threading.Thread | None:
    """Deliver from a thread; None when no relay is configured."""
    if cfg is None:
        return None

    def run() -> None:
        try:
            send(cfg, user, subject, body)
        except Exception as e:
            log.warning("could not mail %s (%s:%s): %s", user, cfg.host, cfg.port, e)

    t = threading.Thread(target=run, name="ds01d-mail", daemon=True)
    t.start()
    return t
