"""TLS contexts for the servers mailer connects to: the SMTP relay and the IMAP bounce mailbox."""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path

log = logging.getLogger("mailer.delivery.tls")


class UnreadableCA(Exception):
    """A CA file that cannot be loaded; the caller says which setting named it."""


@functools.lru_cache(maxsize=16)
def tls_context(ca_file: Path | None, verify: bool, server: str, setting: str) -> ssl.SSLContext:
    """One context per setting for the whole process (loading CAs costs milliseconds); warns once when unverified.

    `server` and `setting` name them in that warning: "the SMTP server mail.example.org", "smtp_tls_verify".
    """
    if not verify:
        log.warning("%s = false: the certificate of %s is not checked", setting, server)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or error
        raise UnreadableCA(f"cannot load it as a PEM CA bundle: {reason}") from None
