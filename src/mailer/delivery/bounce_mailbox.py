"""Reading the bounce mailbox: each message as (stable id, raw bytes), marked handled only once recorded.

A location is `imaps://user@host[:port]/FOLDER` (implicit TLS, port 993), `imap://user@host[:port]/FOLDER`
(port 143; STARTTLS is required, so the password never travels in clear), `maildir:/path` or a
directory with cur/, new/ and tmp/, `mbox:/path` or a plain file. The user name is URL-encoded
(`bounces%40news.example.org`); the folder defaults to INBOX.

Nothing is marked while reading: IMAP fetches with BODY.PEEK[] by UID, a Maildir message stays
where it is, so a reader that stops (crashes) before `mark_handled` sees the same messages again.
`mark_handled` sets \\Seen (Maildir: moves new/ to cur/ with the S flag) and, with `handled_folder`,
moves the message there (IMAP MOVE, else COPY + \\Deleted + UID EXPUNGE; Maildir: a Maildir++
subfolder `.NAME`, made when missing). An mbox file is only read, never rewritten: its ids are
digests of the messages, and the caller skips the Message-IDs it has recorded.

Ids: `imap:UIDVALIDITY:UID` (a new UIDVALIDITY means the server renumbered, and the ids change with
it), `maildir:NAME` (the file name before its `:2,` flags), `mbox:SHA256`.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import io
import logging
import mailbox
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, NoReturn

from pydantic import SecretStr

from mailer.delivery.tls import UnreadableCA, tls_context
from mailer.errors import DeliveryFailed

log = logging.getLogger("mailer.delivery.bounce_mailbox")

MAX_MESSAGE_BYTES = 25_000_000
"""Only this much of a message is fetched: far more than any bounce, and a bound on memory."""


class BounceMailboxError(DeliveryFailed):
    """The bounce mailbox cannot be read: one line naming it (never the password); exit code 3."""


class MailboxMessage(NamedTuple):
    id: str
    raw: bytes


def open_mailbox(
    location: str,
    *,
    password: SecretStr | str | None = None,
    ca_file: Path | None = None,
    verify: bool = True,
    handled_folder: str | None = None,
    timeout: float = 30.0,
) -> Mailbox:
    """The mailbox at `location` (see the module docstring), connected and ready; use it as a context manager."""
    scheme, _, rest = location.partition(":")
    if scheme.lower() in {"imap", "imaps"} and rest.startswith("//"):
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        return IMAPMailbox(
            location, secret, ca_file=ca_file, verify=verify, handled_folder=handled_folder, timeout=timeout
        )
    if scheme.lower() == "maildir":
        return MaildirMailbox(Path(rest), location, handled_folder=handled_folder)
    if scheme.lower() == "mbox":
        return MboxMailbox(Path(rest), location)
    path = Path(location)
    if path.is_dir() and all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
        return MaildirMailbox(path, location, handled_folder=handled_folder)
    if path.is_file():
        return MboxMailbox(path, location)
    what = "a folder without cur/, new/ and tmp/" if path.is_dir() else "no such file or folder"
    raise BounceMailboxError(
        f"bounce mailbox {location}: {what}; give imaps://user@host/INBOX, imap://..., a Maildir folder or an mbox file"
    )


class Mailbox:
    """What every kind of bounce mailbox offers; `watch` polls unless the kind knows better (IMAP IDLE)."""

    name: str

    def messages(self) -> Iterator[MailboxMessage]:
        raise NotImplementedError

    def mark_handled(self, message_id: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release for files."""

    def watch(
        self, *, poll_seconds: float = 60.0, idle_seconds: float = 600.0, stop: threading.Event | None = None
    ) -> Iterator[MailboxMessage]:
        """Messages as they arrive, each once per watch (marked or not), until `stop` is set or the caller stops."""
        stop = stop or threading.Event()
        given: set[str] = set()
        while not stop.is_set():
            for message in self.messages():
                if message.id not in given:
                    given.add(message.id)
                    yield message
                if stop.is_set():
                    return
            self._wait(poll_seconds=poll_seconds, idle_seconds=idle_seconds, stop=stop)

    def _wait(self, *, poll_seconds: float, idle_seconds: float, stop: threading.Event) -> None:
        stop.wait(poll_seconds)

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tls_context(ca_file: Path | None, verify: bool, name: str) -> ssl.SSLContext:
    try:
        return tls_context(ca_file, verify, f"the bounce mailbox {name}", "bounce_tls_verify")
    except UnreadableCA as error:
        raise BounceMailboxError(f"bounce mailbox {name}: CA file {ca_file}: {error}") from None


def _quoted(folder: str) -> str:
    """A folder name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded: list[str] = []
    run = ""
    for char in folder + "\x00":
        if char != "\x00" and not 0x20 <= ord(char) <= 0x7E:
            run += char
            continue
        if run:
            encoded.append("&" + b64encode(run.encode("utf-16-be")).decode("ascii").rstrip("=").replace("/", ",") + "-")
            run = ""
        if char != "\x00":
            encoded.append("&-" if char == "&" else char)
    text = "".join(encoded)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: object) -> str:
    """A server's reply line (bytes, or imaplib's error text holding bytes) as one short line."""
    if isinstance(data, list | tuple):
        data = data[-1] if data else ""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    text = str(data)
    if match := re.fullmatch(r"b'(.*)'", text):
        text = match.group(1)
    return " ".join(text.split())[:300]


class IMAPMailbox(Mailbox):
    """A folder on an IMAP server, read by UID with BODY.PEEK[] (imaplib); connected on creation."""

    def __init__(
        self,
        location: str,
        password: str | None,
        *,
        ca_file: Path | None,
        verify: bool,
        handled_folder: str | None,
        timeout: float,
    ) -> None:
        try:
            url = urllib.parse.urlsplit(location)
        except ValueError as error:  # an unclosed IPv6 bracket, say
            raise BounceMailboxError(f"bounce mailbox {location}: cannot read it as a URL: {error}") from None
        self.implicit_tls = url.scheme.lower() == "imaps"
        self.host = url.hostname or ""
        try:
            self.port = url.port or (993 if self.implicit_tls else 143)
        except ValueError:
            self.port = 0
        self.user = urllib.parse.unquote(url.username or "")
        self.folder = urllib.parse.unquote(url.path.lstrip("/")) or "INBOX"
        self.name = f"{url.scheme.lower()}://{url.username or ''}@{self.host}:{self.port}/{self.folder}"
        if not self.host or not self.user or not self.port:
            self._fail("give it as imaps://user@host[:port]/FOLDER (a user name with @ written as %40)")
        self.password = password if password is not None else urllib.parse.unquote(url.password or "")
        if not self.password:
            self._fail(f"no password given for {self.user!r}")
        self.handled_folder = handled_folder
        self.timeout = timeout
        self.context = _tls_context(ca_file, verify, self.name)
        self._imap: imaplib.IMAP4 | None = None
        self._uidvalidity = ""
        self.capabilities: frozenset[str] = frozenset()
        self._connect()

    def _fail(self, reason: str) -> NoReturn:
        raise BounceMailboxError(f"bounce mailbox {self.name}: {reason}") from None

    def _connect(self) -> None:
        try:
            if self.implicit_tls:
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=self.context, timeout=self.timeout
                )
            else:
                imap = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except ssl.SSLError as error:
            self._tls_failed(error)
        except socket.gaierror:
            self._fail(f"unknown host {self.host!r}")
        except TimeoutError:
            self._fail(
                f"no IMAP greeting within {self.timeout:g} s; check the host and port (imaps:// 993, imap:// 143)"
            )
        except (OSError, imaplib.IMAP4.error) as error:
            reason = (
                error.strerror
                if isinstance(error, OSError) and error.strerror
                else _text(error) or type(error).__name__
            )
            self._fail(f"cannot connect: {reason}")
        try:
            self._login(imap)
        except BaseException:
            _close_quietly(imap)
            raise
        self._imap = imap

    def _login(self, imap: imaplib.IMAP4) -> None:
        try:
            if not self.implicit_tls:
                if "STARTTLS" not in imap.capabilities:
                    self._fail(
                        "the server does not offer STARTTLS, and the password is not sent in clear; use imaps://"
                    )
                imap.starttls(ssl_context=self.context)
            imap.login(self.user, self.password)
            _, capability = imap.capability()
            words = b" ".join(c for c in capability if isinstance(c, bytes)).decode("ascii", "replace")
            self.capabilities = frozenset(words.upper().split())
            self._select(imap)
        except ssl.SSLError as error:
            self._tls_failed(error)
        except imaplib.IMAP4.abort as error:
            self._fail(f"the server closed the connection: {_text(error)}")
        except imaplib.IMAP4.error as error:
            self._fail(f"login refused for {self.user!r}: {_text(error)}; check the user name and password")
        except OSError as error:
            self._fail(f"connection lost: {error.strerror or type(error).__name__}")

    def _select(self, imap: imaplib.IMAP4) -> None:
        typ, data = imap.select(_quoted(self.folder))
        if typ != "OK":
            self._fail(f"no such folder {self.folder!r} ({_text(data)})")
        _, validity = imap.response("UIDVALIDITY")
        self._uidvalidity = _text(validity) if validity and validity[0] else "0"
        if self.handled_folder is not None:
            _, listed = imap.list('""', _quoted(self.handled_folder))
            if not any(isinstance(line, bytes) for line in listed):
                typ, data = imap.create(_quoted(self.handled_folder))
                if typ != "OK":
                    self._fail(f"cannot create the folder {self.handled_folder!r} for handled messages ({_text(data)})")

    def _tls_failed(self, error: ssl.SSLError) -> NoReturn:
        if isinstance(error, ssl.SSLCertVerificationError):
            self._fail(
                f"TLS certificate not accepted ({error.verify_message}); give the CA file that signed it "
                "(or, for a test server only, turn verification off)"
            )
        self._fail(
            f"TLS failed ({error.reason or error}); check imaps:// (port 993) or imap:// with STARTTLS (port 143)"
        )

    @property
    def imap(self) -> imaplib.IMAP4:
        if self._imap is None:
            self._connect()
        assert self._imap is not None
        return self._imap

    def _command(self, command: str, *args: str) -> list[object]:
        """One UID command; a lost connection is the mailbox's error, so a reader can reconnect by reopening."""
        try:
            typ, data = self.imap.uid(command, *args)
        except (imaplib.IMAP4.abort, OSError) as error:
            self._drop()
            self._fail(f"connection lost during UID {command}: {_text(error)}")
        except imaplib.IMAP4.error as error:
            self._fail(f"UID {command} refused: {_text(error)}")
        if typ != "OK":
            self._fail(f"UID {command} refused: {_text(data)}")
        return list(data)

    def messages(self) -> Iterator[MailboxMessage]:
        """The unseen messages, oldest first, fetched one at a time without setting \\Seen.

        NOOP first: a server shows a session what arrived since its last command only at such a sync point.
        """
        try:
            self.imap.noop()
        except (imaplib.IMAP4.abort, OSError) as error:
            self._drop()
            self._fail(f"connection lost: {_text(error)}")
        found = self._command("SEARCH", "UNSEEN")
        uids = [int(u) for line in found if isinstance(line, bytes) for u in line.split() if u.isdigit()]
        for uid in sorted(uids):
            data = self._command("FETCH", str(uid), f"(BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>)")
            raw = next((item[1] for item in data if isinstance(item, tuple) and isinstance(item[1], bytes)), None)
            if raw is not None:
                yield MailboxMessage(f"imap:{self._uidvalidity}:{uid}", raw)

    def mark_handled(self, message_id: str) -> None:
        scheme, validity, uid = message_id.split(":") if message_id.count(":") == 2 else ("", "", "")
        if scheme != "imap" or not uid.isdigit():
            raise ValueError(f"not an id of this mailbox: {message_id!r}")
        if validity != self._uidvalidity:
            self._fail(f"the folder was renumbered (UIDVALIDITY {self._uidvalidity}, was {validity}); read it again")
        self._command("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
        if self.handled_folder is None:
            return
        target = _quoted(self.handled_folder)
        if "MOVE" in self.capabilities:
            self._command("MOVE", uid, target)
            return
        self._command("COPY", uid, target)
        self._command("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            self._command("EXPUNGE", uid)
        else:
            self.imap.expunge()

    def _wait(self, *, poll_seconds: float, idle_seconds: float, stop: threading.Event) -> None:
        """IDLE (RFC 2177) until the server reports a change or `idle_seconds` pass; without IDLE, a poll."""
        if "IDLE" not in self.capabilities:
            stop.wait(poll_seconds)
            return
        imap = self.imap
        tag = b"MLRIDLE"
        try:
            imap.send(tag + b" IDLE\r\n")
            if not imap.readline().startswith(b"+"):
                self._fail("the server refused IDLE")
            deadline = time.monotonic() + idle_seconds
            while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
                sock = imap.sock
                pending = (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0) or _buffered(imap)
                if pending or select.select([sock], [], [], min(remaining, 1.0))[0]:
                    line = imap.readline()
                    if not line or line.startswith(b"* BYE"):
                        raise imaplib.IMAP4.abort(_text(line) or "connection closed")
                    if re.match(rb"\* \d+ (EXISTS|RECENT)", line):
                        break
            imap.send(b"DONE\r\n")
            while not (line := imap.readline()).startswith(tag):
                if not line:
                    raise imaplib.IMAP4.abort("connection closed")
        except (imaplib.IMAP4.abort, OSError) as error:
            self._drop()
            log.info("bounce mailbox %s: connection lost while idle (%s); reconnecting", self.name, _text(error))

    def _drop(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            _close_quietly(imap)

    def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            _close_quietly(imap)


def _buffered(imap: imaplib.IMAP4) -> bool:
    """Whether imaplib's reader already holds the start of a line: a notice that came in the same packet as the
    reply before it is in that buffer, where select() on the socket never sees it."""
    sock = imap.sock
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        reader = imap.file
        return isinstance(reader, io.BufferedReader) and bool(reader.peek(1))
    except (OSError, ValueError):  # nothing buffered and nothing to read now (BlockingIOError, SSLWantReadError)
        return False
    finally:
        sock.settimeout(timeout)


def _close_quietly(imap: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError):
        imap.shutdown()


class MaildirMailbox(Mailbox):
    """A Maildir: unhandled messages are those in new/ and those in cur/ without the S (seen) flag."""

    def __init__(self, path: Path, name: str, *, handled_folder: str | None = None) -> None:
        self.path = path
        self.name = name
        self.handled_folder = handled_folder
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise BounceMailboxError(f"bounce mailbox {name}: not a Maildir (no cur/, new/ and tmp/ in {path})")
        self._files: dict[str, Path] = {}

    def _unhandled(self) -> list[Path]:
        found: list[Path] = []
        for sub in ("new", "cur"):
            try:
                entries = sorted(os.scandir(self.path / sub), key=lambda e: e.name)
            except OSError as error:
                raise BounceMailboxError(f"bounce mailbox {self.name}: cannot read {sub}/: {error.strerror}") from None
            for entry in entries:
                flags = entry.name.partition(":2,")[2]
                if entry.is_file() and not entry.name.startswith(".") and (sub == "new" or "S" not in flags):
                    found.append(Path(entry.path))
        return found

    def messages(self) -> Iterator[MailboxMessage]:
        for path in self._unhandled():
            try:
                raw = _read_bounded(path)
            except FileNotFoundError:
                continue  # handled by another reader meanwhile
            except OSError as error:
                raise BounceMailboxError(
                    f"bounce mailbox {self.name}: cannot read {path.name}: {error.strerror}"
                ) from None
            message_id = "maildir:" + path.name.partition(":")[0]
            self._files[message_id] = path
            yield MailboxMessage(message_id, raw)

    def mark_handled(self, message_id: str) -> None:
        key = message_id.removeprefix("maildir:")
        path = self._files.get(message_id)
        if path is None or not path.exists():
            path = next((p for p in self._unhandled() if p.name.partition(":")[0] == key), None)
        if path is None:
            return  # already handled
        flags = "".join(sorted(set(path.name.partition(":2,")[2]) | {"S"}))
        folder = self.path if self.handled_folder is None else self._subfolder(self.handled_folder)
        try:
            path.rename(folder / "cur" / f"{key}:2,{flags}")
        except FileNotFoundError:
            return  # another fetch running at the same time handled it first
        except OSError as error:
            raise BounceMailboxError(
                f"bounce mailbox {self.name}: cannot mark {key} handled: {error.strerror}"
            ) from None
        self._files.pop(message_id, None)

    def _subfolder(self, name: str) -> Path:
        folder = self.path / ("." + name.lstrip("."))
        try:
            for sub in ("cur", "new", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            (folder / "maildirfolder").touch()
        except OSError as error:
            raise BounceMailboxError(
                f"bounce mailbox {self.name}: cannot make the folder {folder}: {error.strerror}"
            ) from None
        return folder


class MboxMailbox(Mailbox):
    """An mbox file, read only: every message every time; the caller skips those it has recorded."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        if not path.is_file():
            raise BounceMailboxError(f"bounce mailbox {name}: no such mbox file {path}")
        try:
            with path.open("rb") as file:
                start = file.read(5)
        except OSError as error:
            raise BounceMailboxError(f"bounce mailbox {name}: cannot read it: {error.strerror}") from None
        if start and start != b"From ":
            raise BounceMailboxError(
                f"bounce mailbox {name}: not an mbox file (it does not start with 'From '); "
                "give an mbox file, a Maildir folder or an imaps:// URL"
            )

    def messages(self) -> Iterator[MailboxMessage]:
        try:
            box = mailbox.mbox(self.path, create=False)
            keys = box.keys()
        except (OSError, mailbox.Error) as error:
            raise BounceMailboxError(f"bounce mailbox {self.name}: cannot read it: {error}") from None
        try:
            for key in keys:
                raw = box.get_bytes(key)
                yield MailboxMessage("mbox:" + hashlib.sha256(raw).hexdigest(), raw)
        finally:
            box.close()

    def mark_handled(self, message_id: str) -> None:
        """The user's mbox file is never rewritten."""


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(MAX_MESSAGE_BYTES)
