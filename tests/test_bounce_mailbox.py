"""Reading the bounce mailbox: a real Dovecot over imaps and STARTTLS, a Maildir, an mbox file."""

from __future__ import annotations

import mailbox
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from mailer.delivery.bounce_mailbox import BounceMailboxError, IMAPMailbox, MailboxMessage, open_mailbox
from mailer.delivery.bounce_parse import parse_bounce
from tests.dovecot_server import HANDLED, PASSWORD, DovecotServer
from tests.test_bounce_parse import dsn, recipient


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


def message(number: int) -> bytes:
    return f"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice {number}\r\nMessage-ID: <n{number}@mx>\r\n\r\nbody {number}\r\n".encode()


def subjects(messages: list[MailboxMessage]) -> list[str]:
    return [m.raw.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in messages]


def test_imaps_with_the_test_ca_reads_a_bounce(dovecot: DovecotServer) -> None:
    raw = dsn(recipient("5.1.1", "550 5.1.1 no such user"), token="T0KEN-9")
    dovecot.deliver(raw)
    with open_mailbox(dovecot.url("imaps"), password=SecretStr(PASSWORD), ca_file=dovecot.ca.ca_file) as box:
        [found] = list(box.messages())
    assert found.raw == raw and found.id.startswith("imap:")
    report = parse_bounce(found.raw)
    assert report.kind == "hard" and report.verp_token("bounces@news.example.org") == "T0KEN-9"
    assert dovecot.folder_count("INBOX", "UNSEEN") == 1, "reading must not set \\Seen"


def test_imap_with_starttls(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with open_mailbox(dovecot.url("imap"), password=PASSWORD, ca_file=dovecot.ca.ca_file) as box:
        assert subjects(list(box.messages())) == ["failure notice 1"]


def test_a_refused_login_is_one_line_without_the_password(dovecot: DovecotServer) -> None:
    with pytest.raises(BounceMailboxError) as caught:
        open_mailbox(dovecot.url("imaps"), password="hunter2-wrong", ca_file=dovecot.ca.ca_file)
    text = str(caught.value)
    assert text == (
        f"bounce mailbox {dovecot.url('imaps')}: login refused for 'bounces@news.example.org': "
        "[AUTHENTICATIONFAILED] Authentication failed.; check the user name and password"
    )
    assert "hunter2" not in text and "\n" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_untrusted_certificate_is_one_line(dovecot: DovecotServer) -> None:
    with pytest.raises(BounceMailboxError) as caught:
        open_mailbox(dovecot.url("imaps"), password=PASSWORD)
    assert str(caught.value) == (
        f"bounce mailbox {dovecot.url('imaps')}: TLS certificate not accepted (unable to get local issuer certificate); "
        "give the CA file that signed it (or, for a test server only, turn verification off)"
    )


def test_verification_off_reads_an_untrusted_server(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with open_mailbox(dovecot.url("imap"), password=PASSWORD, verify=False) as box:
        assert len(list(box.messages())) == 1


def test_no_such_folder(dovecot: DovecotServer) -> None:
    with pytest.raises(BounceMailboxError, match=r"/Nope: no such folder 'Nope'"):
        open_mailbox(dovecot.url("imaps", "Nope"), password=PASSWORD, ca_file=dovecot.ca.ca_file)


def test_an_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(BounceMailboxError) as caught:
            open_mailbox(f"imaps://bounces@127.0.0.1:{port}/INBOX", password=PASSWORD)
    assert (
        str(caught.value)
        == f"bounce mailbox imaps://bounces@127.0.0.1:{port}/INBOX: cannot connect: Connection refused"
    )


def test_plain_imap_to_the_imaps_port_says_so(dovecot: DovecotServer) -> None:
    with pytest.raises(BounceMailboxError, match="no IMAP greeting within 2 s; check the host and port"):
        open_mailbox(f"imap://bounces@127.0.0.1:{dovecot.imaps_port}/INBOX", password=PASSWORD, timeout=2)


def test_the_password_is_not_sent_where_starttls_is_not_offered() -> None:
    """A server that offers no STARTTLS gets no LOGIN: the password would cross the network in clear."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(b"* OK IMAP4rev1 ready\r\n")
            stream.flush()
            while line := stream.readline():
                received.append(line)
                tag = line.split(b" ")[0]
                if b"CAPABILITY" in line.upper():
                    stream.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                else:
                    stream.write(tag + b" OK done\r\n")
                stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener, pytest.raises(BounceMailboxError) as caught:
        open_mailbox(f"imap://bounces@127.0.0.1:{port}/INBOX", password="s3cret")
    thread.join(timeout=5)
    assert str(caught.value).endswith(
        "the server does not offer STARTTLS, and the password is not sent in clear; use imaps://"
    )
    assert not any(b"LOGIN" in line.upper() or b"s3cret" in line for line in received)


def test_marking_handled_sets_seen_and_moves_to_the_folder(dovecot: DovecotServer) -> None:
    for number in range(3):
        dovecot.deliver(message(number))
    with open_mailbox(dovecot.url(), password=PASSWORD, ca_file=dovecot.ca.ca_file, handled_folder=HANDLED) as box:
        first, *rest = list(box.messages())
        box.mark_handled(first.id)
        assert subjects(list(box.messages())) == ["failure notice 1", "failure notice 2"]
    assert dovecot.folder_count("INBOX") == 2
    assert dovecot.folder_count(HANDLED, "SEEN") == 1


def test_without_a_folder_marking_handled_leaves_it_seen_in_place(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with open_mailbox(dovecot.url(), password=PASSWORD, ca_file=dovecot.ca.ca_file) as box:
        [found] = list(box.messages())
        box.mark_handled(found.id)
        assert list(box.messages()) == []
    assert dovecot.folder_count("INBOX", "SEEN") == 1


def test_without_move_it_copies_and_expunges() -> None:
    with DovecotServer(capabilities="IMAP4rev1 UIDPLUS IDLE") as server:
        for number in range(2):
            server.deliver(message(number))
        with open_mailbox(server.url(), password=PASSWORD, ca_file=server.ca.ca_file, handled_folder=HANDLED) as box:
            assert isinstance(box, IMAPMailbox) and "MOVE" not in box.capabilities
            first = next(iter(box.messages()))
            box.mark_handled(first.id)
        assert server.folder_count("INBOX") == 1
        assert server.folder_count(HANDLED, "SEEN") == 1


def test_a_reader_that_stops_before_marking_sees_the_rest_again(dovecot: DovecotServer) -> None:
    for number in range(5):
        dovecot.deliver(message(number))
    with open_mailbox(dovecot.url(), password=PASSWORD, ca_file=dovecot.ca.ca_file, handled_folder=HANDLED) as box:
        for index, found in enumerate(box.messages()):
            if index == 0:
                box.mark_handled(found.id)
            if index == 1:
                break  # the crash: the second was fetched, never recorded nor marked
    with open_mailbox(dovecot.url(), password=PASSWORD, ca_file=dovecot.ca.ca_file, handled_folder=HANDLED) as box:
        again = list(box.messages())
    assert subjects(again) == [f"failure notice {n}" for n in range(1, 5)]
    assert dovecot.folder_count("INBOX", "UNSEEN") == 4


def deliver_later(action: object, delay: float = 1.0) -> threading.Timer:
    assert callable(action)
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_watch_with_idle_sees_a_new_message_at_once(dovecot: DovecotServer) -> None:
    dovecot.deliver(message(1))
    with open_mailbox(dovecot.url(), password=PASSWORD, ca_file=dovecot.ca.ca_file) as box:
        assert isinstance(box, IMAPMailbox) and "IDLE" in box.capabilities
        seen: list[MailboxMessage] = []
        started = 0.0
        for found in box.watch(poll_seconds=600, idle_seconds=600):
            seen.append(found)
            if len(seen) == 1:
                started = time.monotonic()
                deliver_later(lambda: dovecot.deliver(message(2)))
            else:
                break
    assert subjects(seen) == ["failure notice 1", "failure notice 2"]
    assert time.monotonic() - started < 10, "IDLE should wake the watch, not the 600 s poll"


def test_watch_without_idle_polls() -> None:
    with DovecotServer(capabilities="IMAP4rev1 UIDPLUS MOVE") as server:
        with open_mailbox(server.url(), password=PASSWORD, ca_file=server.ca.ca_file) as box:
            deliver_later(lambda: server.deliver(message(7)), delay=0.5)
            found = next(iter(box.watch(poll_seconds=0.5)))
        assert subjects([found]) == ["failure notice 7"]


def test_watch_ends_when_stopped(dovecot: DovecotServer) -> None:
    stop = threading.Event()
    with open_mailbox(dovecot.url(), password=PASSWORD, ca_file=dovecot.ca.ca_file) as box:
        deliver_later(stop.set, delay=0.5)
        started = time.monotonic()
        assert list(box.watch(idle_seconds=600, stop=stop)) == []
    assert time.monotonic() - started < 5


def make_maildir(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(path, create=True)
    for raw in messages:
        box.add(raw)
    return path


def test_maildir_reads_new_and_unseen_and_marks_into_cur(tmp_path: Path) -> None:
    folder = make_maildir(tmp_path / "Maildir", [message(n) for n in range(3)])
    seen_one = next((folder / "new").iterdir())
    seen_one.rename(folder / "cur" / f"{seen_one.name}:2,S")
    with open_mailbox(str(folder)) as box:
        found = list(box.messages())
        assert len(found) == 2 and all(m.id.startswith("maildir:") for m in found)
        box.mark_handled(found[0].id)
        assert [m.id for m in box.messages()] == [found[1].id]
    key = found[0].id.removeprefix("maildir:")
    assert (folder / "cur" / f"{key}:2,S").exists() and not (folder / "new" / key).exists()
    with open_mailbox(f"maildir:{folder}") as box:
        assert [m.id for m in box.messages()] == [found[1].id]


def test_maildir_marks_into_a_subfolder(tmp_path: Path) -> None:
    folder = make_maildir(tmp_path / "Maildir", [message(1)])
    with open_mailbox(f"maildir:{folder}", handled_folder=HANDLED) as box:
        [found] = list(box.messages())
        box.mark_handled(found.id)
        assert list(box.messages()) == []
    [moved] = (folder / f".{HANDLED}" / "cur").iterdir()
    assert moved.name.endswith(":2,S") and moved.read_bytes() == found.raw


def test_mbox_is_read_and_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for number in range(3):
        box.add(message(number).replace(b"\r\n", b"\n"))
    box.close()
    before = path.read_bytes()
    for location in (str(path), f"mbox:{path}"):
        with open_mailbox(location) as reader:
            found = list(reader.messages())
            for item in found:
                reader.mark_handled(item.id)
            again = list(reader.messages())
        assert [m.id for m in found] == [m.id for m in again] and len({m.id for m in found}) == 3
        assert found[0].raw.startswith(b"From: MAILER-DAEMON@mx.example.net\n")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("{tmp}/missing", "no such file or folder"),
        ("{tmp}", "a folder without cur/, new/ and tmp/"),
    ],
)
def test_a_location_that_is_no_mailbox(tmp_path: Path, location: str, reason: str) -> None:
    where = location.format(tmp=tmp_path)
    with pytest.raises(BounceMailboxError) as caught:
        open_mailbox(where)
    assert str(caught.value) == (
        f"bounce mailbox {where}: {reason}; give imaps://user@host/INBOX, imap://..., a Maildir folder or an mbox file"
    )
