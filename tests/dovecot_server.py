"""A real Dovecot IMAP server on 127.0.0.1 for the bounce mailbox tests, started by the test itself.

Everything lives in one temp folder of its own (made with mode 711, since pytest's tmp_path is
private to root and Dovecot's unprivileged processes must reach it): the config, a passwd-file
user, the Maildir, a CA and a certificate for 127.0.0.1 it signed (tests/relay_servers.py's
`make_ca`), the sockets and the log. The server listens on two free ports: implicit TLS (imaps) and
plain IMAP that offers STARTTLS and refuses a login before it (`disable_plaintext_auth`).

Dovecot's own processes run as the user running the tests. Under root two of them cannot:
imap-login refuses root (it runs as Debian's dovenull, else nobody) and mail access as uid 0 is
refused (the Maildir belongs to nobody, and `deliver` chowns what it drops there). The system
service is never touched: `dovecot -F -c CONFIG` is our child, with its own base_dir and instance
name, stopped on exit, and the folder is removed.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import fail_process, missing_service
from tests.relay_servers import CertificateAuthority, make_ca
from tests.smtp_server import free_port

USER = "bounces@news.example.org"
PASSWORD = "correct horse battery staple"
HANDLED = "Handled"

_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailer-test-{instance}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = 0
first_valid_gid = 0
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
mailbox_idle_check_interval = 1 secs
{capability_line}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service auth {{
  user = {user}
}}
service auth-worker {{
  user = {user}
}}
service stats {{
  chroot =
}}
"""


def dovecot_binary() -> str:
    """The dovecot executable, or a skip (a failure under CI=true) saying how to install it."""
    found = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None
    )
    if found is None:
        missing_service(
            "Dovecot is not installed: the bounce mailbox IMAP tests need it (apt-get install dovecot-imapd)"
        )
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    if not re.match(r"2\.3\.", version):
        missing_service(
            f"Dovecot {version or '(unknown version)'} found; tests/dovecot_server.py writes a Dovecot 2.3 config"
        )
    return found


class DovecotServer:
    """Dovecot on free ports of 127.0.0.1 in `root`; use it as a context manager."""

    def __init__(self, *, capabilities: str | None = None) -> None:
        """`capabilities` replaces what Dovecot announces after login (imap_capability), e.g. without MOVE or IDLE."""
        self.binary = dovecot_binary()
        self.capabilities = capabilities
        self.mail_uid, self.mail_gid = _mail_owner()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.login_user = _login_user(self.user)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
        try:
            self.root.chmod(0o711)
            self.ca: CertificateAuthority = make_ca(self.root)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.maildir = self.root / "mail" / USER
        self.process: subprocess.Popen[str] | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def url(self, scheme: str = "imaps", folder: str = "INBOX", *, user: str = USER) -> str:
        port = self.imaps_port if scheme == "imaps" else self.imap_port
        return f"{scheme}://{user.replace('@', '%40')}@127.0.0.1:{port}/{folder}"

    def __enter__(self) -> DovecotServer:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        for folder in ("run", "state", "home", "mail"):
            (self.root / folder).mkdir(exist_ok=True)
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "home" / USER).mkdir(exist_ok=True)
        for path in (self.root / "home" / USER, self.maildir, *(self.maildir / sub for sub in ("cur", "new", "tmp"))):
            os.chown(path, self.mail_uid, self.mail_gid)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n", encoding="utf-8")
        self.config.write_text(
            _CONFIG.format(
                root=self.root,
                instance=uuid.uuid4().hex[:8],
                user=self.user,
                group=grp.getgrgid(os.getgid()).gr_name,
                login_user=self.login_user,
                uid=self.mail_uid,
                gid=self.mail_gid,
                cert=self.ca.cert_file,
                key=self.ca.key_file,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
                capability_line=f"imap_capability = {self.capabilities}" if self.capabilities else "",
            ),
            encoding="utf-8",
        )
        process = self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not all(_listening(port) for port in (self.imap_port, self.imaps_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                self.process = None
                fail_process(
                    process,
                    f"dovecot did not listen on 127.0.0.1:{self.imap_port} and :{self.imaps_port} within 20 s "
                    f"(exit code {process.poll()}); its log:\n{self.log()}",
                )
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        try:
            if process is not None:
                process.terminate()
                try:
                    process.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    fail_process(process, "dovecot did not stop within 15 s of SIGTERM")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(encoding="utf-8", errors="replace")[-4000:] if path.exists() else "(no log yet)"

    def deliver(self, data: bytes, *, folder: str | None = None) -> Path:
        """Drop a message into the Maildir the way an MDA does: written into tmp/, then renamed into new/."""
        box = self.maildir if folder is None else self.maildir / f".{folder}"
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.mailer-test"
        temporary = box / "tmp" / name
        temporary.write_bytes(data)
        os.chown(temporary, self.mail_uid, self.mail_gid)
        target = box / "new" / name
        temporary.rename(target)
        return target

    def imap(self) -> imaplib.IMAP4_SSL:
        """A logged-in client trusting the test CA, to look at the server's side of things."""
        import ssl

        client = imaplib.IMAP4_SSL(
            "127.0.0.1",
            self.imaps_port,
            ssl_context=ssl.create_default_context(cafile=str(self.ca.ca_file)),
            timeout=10,
        )
        client.login(USER, PASSWORD)
        return client

    def folder_count(self, folder: str, criterion: str = "ALL") -> int:
        """How many messages in `folder` match `criterion` (e.g. UNSEEN), as Dovecot sees it."""
        client = self.imap()
        try:
            typ, _ = client.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return 0
            _, data = client.uid("SEARCH", criterion)
            return len(data[0].split()) if data and data[0] else 0
        finally:
            client.logout()


def _mail_owner() -> tuple[int, int]:
    """Dovecot refuses mail access as uid 0: under root the mailbox belongs to nobody."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        missing_service("running as root, the test Maildir needs an unprivileged owner: user nobody")
    return nobody.pw_uid, nobody.pw_gid


def _login_user(user: str) -> str:
    """imap-login refuses to run as root: under root it runs as Debian's dovenull (or nobody)."""
    if os.getuid() != 0:
        return user
    for name in ("dovenull", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    missing_service("running as root, Dovecot's login process needs an unprivileged user: dovenull or nobody")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
