"""MIME messages for one issue, built once and personalised per recipient in microseconds.

The rendered email is encoded once (quoted-printable, CRLF) into literal byte segments with
gaps where the per-recipient parts go, and sections only some recipients get (the greeting
line, see compose/placeholders.py); each recipient's message is those segments joined with
that recipient's encoded values. Every line is at most 76 octets and none starts with a dot,
so the bytes are ready for SMTP DATA as they are (see smtp.py) and identical in .eml files.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.quoprimime
import hashlib
import html
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime, parseaddr

from mailer.audience.addresses import envelope_address
from mailer.compose.images import PreparedImage
from mailer.compose.placeholders import Gap, Section, recipient_values, shown, split_markers
from mailer.compose.render import RenderedIssue
from mailer.delivery.dkim_signing import DkimSigner
from mailer.delivery.headers import encoded_header, mailbox_header
from mailer.delivery.wire import WireBytes
from mailer.errors import MailerError, RenderError

_QP_WIDTH = 74
"""Two under QP's 76, so a line's leading dot can become =2E without passing the limit."""


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""
    unsubscribe_url: str = ""


def _qp(text: str) -> bytes:
    """Quoted-printable, CRLF, no line over 76 octets, no line starting with a dot."""
    octets = text.encode("utf-8").decode("latin-1")
    encoded = email.quoprimime.body_encode(octets, maxlinelen=_QP_WIDTH, eol="\r\n").encode("ascii")
    if encoded.startswith(b"."):
        encoded = b"=2E" + encoded[1:]
    return encoded.replace(b"\r\n.", b"\r\n=2E")


_SOFT_BREAK = b"=\r\n"


@dataclass(frozen=True)
class _Gap:
    key: str
    fallback: bytes | None
    """Encoded once, on soft-broken lines of its own: what a recipient without the value gets."""


@dataclass(frozen=True)
class _Section:
    key: str
    inverted: bool
    segments: list[bytes | _Gap]


Segment = bytes | _Gap | _Section
"""A literal run of encoded bytes, a per-recipient value, or a run only recipients with (without) a value get."""


def _line(pieces: list[str | Gap]) -> list[bytes | _Gap]:
    return [
        _qp(piece)
        if isinstance(piece, str)
        else _Gap(piece.key, None if piece.fallback is None else _SOFT_BREAK + _qp(piece.fallback) + _SOFT_BREAK)
        for piece in pieces
        if piece
    ]


def _segments(text: str) -> list[Segment]:
    """Encode text around its markers; each value and each section later starts on a soft-broken line of its own."""
    try:
        pieces = split_markers(text)
    except ValueError as error:
        raise RenderError(f"the rendered email: {error}") from None
    out: list[Segment] = []
    for piece in pieces:
        if isinstance(piece, Section):
            out.append(_Section(piece.key, piece.inverted, _line(piece.pieces)))
        else:
            out += _line([piece])
    return out


def _joiner(segments: list[Segment], escape: Callable[[str], str]) -> Callable[[dict[str, str]], bytes]:
    def gap(segment: _Gap, values: dict[str, str]) -> bytes:
        value = values[segment.key]
        if not value and segment.fallback is not None:
            return segment.fallback
        return _SOFT_BREAK + _qp(escape(value)) + _SOFT_BREAK

    def join(values: dict[str, str]) -> bytes:
        parts: list[bytes] = []
        for segment in segments:
            if isinstance(segment, bytes):
                parts.append(segment)
            elif isinstance(segment, _Gap):
                parts.append(gap(segment, values))
            else:
                parts.append(_SOFT_BREAK)
                if shown(segment.key, segment.inverted, values):
                    parts += [inner if isinstance(inner, bytes) else gap(inner, values) for inner in segment.segments]
                    parts.append(_SOFT_BREAK)
        return b"".join(parts)

    return join


def _image_parts(images: tuple[PreparedImage, ...], boundary: str) -> bytes:
    """The issue's images as inline parts the HTML names by `cid:<name>`, then the end of the related part.

    Encoded once per send: each recipient's message only joins these bytes.
    """
    parts = []
    for image in images:
        encoded = base64.encodebytes(image.data).replace(b"\n", b"\r\n")
        parts.append(
            f"\r\n--{boundary}\r\nContent-Type: {image.media_type}\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-ID: <{image.name}>\r\nContent-Disposition: inline; filename="{image.name}"\r\n\r\n'.encode()
            + encoded.rstrip(b"\r\n")
        )
    return b"".join(parts) + f"\r\n--{boundary}--".encode()


def sender_domain(sender: str) -> str:
    """The domain of the sender's address, as A-labels: Message-IDs and the DKIM signature name it."""
    return envelope_address(parseaddr(sender)[1]).rpartition("@")[2]


class MessageTemplate:
    """Everything about an issue's message that does not depend on the recipient."""

    def __init__(
        self,
        rendered: RenderedIssue,
        *,
        subject: str,
        sender: str,
        reply_to: str | None = None,
        list_id: str | None = None,
        unsubscribe_mailto: str | None = None,
        signer: DkimSigner | None = None,
        embed_images: bool = False,
    ) -> None:
        _, sender_address = parseaddr(sender)
        if "@" not in sender_address:
            raise MailerError(f"sender {sender!r}: set sender to an address such as 'Newsletter <news@example.org>'")
        self.sender_address = sender_address
        self.domain = sender_domain(sender)
        self.unsubscribe_mailto = unsubscribe_mailto
        self.signer = signer
        self._message_ids = itertools.count(1)
        self._message_id_prefix = f"{int(time.time())}.{secrets.token_hex(6)}"
        self._message_id_key = secrets.token_bytes(16)
        """Each Message-ID ends in a keyed hash of its number: one message's id does not give away the others'."""
        boundary = f"=_mailer_{secrets.token_hex(16)}"
        sender_name, _ = parseaddr(sender)
        head = [
            mailbox_header("From", sender_name, sender_address),
            encoded_header("Subject", subject),
        ]
        if reply_to:
            head.append(mailbox_header("Reply-To", *parseaddr(reply_to)))
        if list_id:
            head.append(encoded_header("List-Id", list_id))
        head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        head.append(b"MIME-Version: 1.0\r\n")
        head.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode())
        self._head = b"".join(head)
        part_head = (
            '--{b}\r\nContent-Type: text/{kind}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
        )
        self._text = _joiner(_segments(rendered.text), lambda value: value)
        self._html = _joiner(_segments(rendered.email_html), lambda value: html.escape(value, quote=True))
        self._text_head = part_head.format(b=boundary, kind="plain").encode()
        self._html_head = b"\r\n" + part_head.format(b=boundary, kind="html").encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        if embed_images and rendered.images:
            related = f"=_mailer_related_{secrets.token_hex(12)}"
            self._html_head = (
                f'\r\n--{boundary}\r\nContent-Type: multipart/related; type="text/html";\r\n boundary="{related}"\r\n\r\n'
            ).encode() + part_head.format(b=related, kind="html").encode()
            self._tail = _image_parts(rendered.images, related) + self._tail

    def new_message_id(self) -> str:
        """Unique without a system call per message: a random prefix per send, a counter and its keyed hash.

        Written as it is, not through headers.py: a msg-id is one `<...>` with no whitespace to
        fold at (RFC 5322 3.6.4), which the folding rules keep whole anyway. On a sender domain of
        some 35 characters or more its line passes 76; a domain has at most 253, far under 998.
        """
        number = next(self._message_ids)
        check = hashlib.blake2b(number.to_bytes(8, "big"), key=self._message_id_key, digest_size=6).hexdigest()
        return f"<{self._message_id_prefix}.{number}.{check}@{self.domain}>"

    def message_for(self, recipient: Recipient) -> tuple[str, WireBytes]:
        """(Message-ID, bytes): what every path sends or writes (a send, a test send, a dry run's .eml files)."""
        message_id = self.new_message_id()
        data = self.build(recipient, message_id=message_id, date=dt.datetime.now(dt.UTC))
        return message_id, self.signer.sign(data) if self.signer is not None else data

    def build(self, recipient: Recipient, *, message_id: str, date: dt.datetime) -> WireBytes:
        """The whole message for one recipient, CRLF line endings, ready for DATA as it is."""
        values = recipient_values(recipient.email, recipient.name, recipient.unsubscribe_url)
        unsubscribe = f"<{recipient.unsubscribe_url}>"
        if self.unsubscribe_mailto:
            unsubscribe += f", <{self.unsubscribe_mailto}>"
        headers = (
            mailbox_header("To", recipient.name, recipient.email)
            + f"Date: {format_datetime(date)}\r\nMessage-ID: {message_id}\r\n".encode("ascii")
            + encoded_header("List-Unsubscribe", unsubscribe)
        )
        return WireBytes(
            b"".join(
                (
                    headers,
                    self._head,
                    self._text_head,
                    self._text(values),
                    self._html_head,
                    self._html(values),
                    self._tail,
                )
            )
        )
