"""Double opt-in: a signed, expiring link mailed to the address; only following it subscribes.

The token carries the list, the address and the name, signed with the unsubscribe secret
(itsdangerous, its own salt) and stamped with the time it was made, so it cannot be forged,
outlives `confirm_hours` by nothing, and cannot undo a later unsubscription (see public_web).
"""

from __future__ import annotations

import datetime as dt
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import Policy
from email.utils import format_datetime, make_msgid, parseaddr
from typing import TYPE_CHECKING, Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from mailer.audience.lists import PublicList
from mailer.delivery.headers import encoded_header, mailbox_header
from mailer.delivery.message import sender_domain
from mailer.delivery.unsubscribe import BadToken
from mailer.settings import Settings

CONFIRM_SALT = "mailer.subscribe.confirm"
_BODY_POLICY = email.policy.SMTP.clone(max_line_length=76)
"""Quoted-printable lines of at most 76 characters, as in an issue's messages (RFC 2045 6.7)."""


if TYPE_CHECKING:
    _EmailPolicy = email.policy.EmailPolicy[EmailMessage]
else:
    _EmailPolicy = email.policy.EmailPolicy  # not subscriptable at run time


class _AsFolded(str):
    """A header's value with the folds headers.py gave it; the email package writes it back line for line."""

    name: str

    def fold(self, *, policy: Policy[Any]) -> str:
        """What EmailPolicy.fold gives a header it does not refold, whatever the policy's refold_source."""
        return f"{self.name}: " + policy.linesep.join(self.splitlines()) + policy.linesep


class _KeepFolds(_EmailPolicy):
    """EmailPolicy, but a parsed header keeps its lines when the message is written again.

    The email package refolds a header with a line over 78 characters (a long address) its own
    way: after the field name, and a display name it cuts loses its quotes. Its generator lets a
    value with a `name` fold itself, and reading a header still parses it as EmailPolicy does.
    """

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        folded = _AsFolded(value)
        folded.name = name
        return name, folded

    def header_fetch_parse(self, name: str, value: str) -> Any:
        return super().header_fetch_parse(name, str(value))


_KEEP_FOLDS = _KeepFolds(linesep="\r\n")


@dataclass(frozen=True)
class SubscribeRequest:
    list_id: int
    email: str
    name: str
    issued: dt.datetime


Clock = Callable[[], float]
"""Seconds since the epoch, like time.time; injectable so expiry is tested without waiting."""


class _ClockSigner(TimestampSigner):
    """itsdangerous' timestamp signer, reading the time from the clock it is given."""

    def __init__(self, *args: Any, now: Clock = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now

    def get_timestamp(self) -> int:
        return int(self.now())


def _serializer(secret: str, now: Clock) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=CONFIRM_SALT, signer=_ClockSigner, signer_kwargs={"now": now})


def make_confirm_token(secret: str, list_id: int, email: str, name: str, *, now: Clock = time.time) -> str:
    return str(_serializer(secret, now).dumps([list_id, email, name]))


def read_confirm_token(secret: str, token: str, *, max_age_hours: float, now: Clock = time.time) -> SubscribeRequest:
    """The request a genuine, unexpired token carries; BadToken otherwise (one message for every case)."""
    try:
        payload, issued = _serializer(secret, now).loads(
            token, max_age=max(1, round(max_age_hours * 3600)), return_timestamp=True
        )
        list_id, email, name = payload
    except (BadData, ValueError, TypeError):
        raise BadToken("this confirmation link is not valid or has expired; subscribe again") from None
    return SubscribeRequest(int(list_id), str(email), str(name), issued.astimezone(dt.UTC))


def confirmation_message(
    settings: Settings, mailing_list: PublicList, email_address: str, name: str, link: str
) -> EmailMessage:
    """The one mail a subscribe form sends: to the address given, nothing else in it that the visitor typed but the name.

    Its headers are made by the same helpers as an issue's (delivery/headers.py): a readable
    name, the domain as A-labels, a non-ASCII local part in UTF-8 (RFC 6532; smtp.py sends that
    only with SMTPUTF8), Date and Message-ID, folded by the same rules (76 characters but for a
    `<...>` longer than a line, which stays whole). The body is UTF-8 quoted-printable, also no
    line over 76, so no relay needs 8BITMIME. The message is parsed from those bytes keeping each
    header's lines, so serialising it again (`as_bytes(policy=email.policy.SMTP)`, as public_web
    does) gives the same bytes back, even a line the email package would refold (a long address).
    """
    title = mailing_list.description or mailing_list.name
    organisation = settings.branding.name
    sender = settings.sender or ""
    body = EmailMessage(policy=_BODY_POLICY)
    body.set_content(
        f"Someone, probably you, asked to receive {title} from {organisation} at this address.\n\n"
        f"To confirm, open this link within {settings.confirm_hours:g} hours and press the button:\n\n"
        f"{link}\n\n"
        "If it was not you, ignore this message: you will not be subscribed and will hear nothing more.\n",
        cte="quoted-printable",
    )
    head = b"".join(
        (
            mailbox_header("From", *parseaddr(sender)),
            mailbox_header("To", name, email_address),
            encoded_header("Subject", f"Confirm your subscription: {title}"),
            encoded_header("Date", format_datetime(dt.datetime.now(dt.UTC))),
            encoded_header("Message-ID", make_msgid(domain=sender_domain(sender) or None)),
            b"Auto-Submitted: auto-generated\r\n",
        )
    )
    return BytesParser(EmailMessage, policy=_KEEP_FOLDS).parsebytes(head + body.as_bytes(policy=_BODY_POLICY))
