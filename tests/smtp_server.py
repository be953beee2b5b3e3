"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what it receives and fails on request.

Failures are injected on the server side, by recipient address:
  temp-N@...   answers 451 to the first N deliveries, then accepts
  perm@...     answers 554 5.7.1 at DATA (refused, but nothing says the address is bad)
  nouser@...   answers 550 5.1.1 at RCPT (no such user: a hard bounce)
  grey-N@...   answers 450 4.7.1 at RCPT the first N times (greylisting), then accepts
  drop@...     drops the connection in the middle of DATA, once
  bye@...      answers 421 and closes the connection, once

It announces PIPELINING (RFC 2920) as Postfix does, unless made with `pipelining=False`; aiosmtpd
reads commands one line at a time, so pipelined commands are answered in order.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServerProtocol


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    recipients: list[str]
    data: bytes
    at: float
    mail_from: str = ""


@dataclass
class Recorder:
    messages: list[Received] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    delay: float = 0.0
    pipelining: bool = True
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        local = address.split("@")[0]
        if local.startswith("nouser"):
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        if match := re.match(r"grey-(\d+)", local):
            with self.lock:
                self.attempts["RCPT " + address] += 1
                if self.attempts["RCPT " + address] <= int(match.group(1)):
                    return "450 4.7.1 <" + address + ">: Recipient address rejected: greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServerProtocol, session: Any, envelope: Any) -> str:
        [rcpt] = envelope.rcpt_tos
        with self.lock:
            self.attempts[rcpt] += 1
            attempt = self.attempts[rcpt]
        if self.delay:
            await asyncio.sleep(self.delay)
        local = rcpt.split("@")[0]
        transport = server.transport
        assert isinstance(transport, asyncio.WriteTransport)
        if (match := re.match(r"temp-(\d+)", local)) and attempt <= int(match.group(1)):
            return "451 4.3.0 try again later"
        if local.startswith("perm"):
            return "554 5.7.1 message refused"
        if local.startswith("drop") and attempt == 1:
            transport.close()
            return "451 gone"
        if local.startswith("bye") and attempt == 1:
            transport.write(b"421 4.3.2 shutting down\r\n")
            transport.close()
            return "421 closing"
        with self.lock:
            self.messages.append(
                Received(list(envelope.rcpt_tos), envelope.original_content, time.monotonic(), envelope.mail_from)
            )
            self.lock.notify_all()
        return "250 2.0.0 queued"

    def wait_for(self, count: int, *, timeout: float = 10) -> list[Received]:
        """The messages, once at least `count` arrived; AssertionError after `timeout` seconds saying how many did."""
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.messages) >= count, timeout=timeout):
                raise AssertionError(f"{len(self.messages)} of {count} messages arrived within {timeout:g} s")
            return list(self.messages)

    def delivered(self) -> Counter[str]:
        with self.lock:
            return Counter(r for m in self.messages for r in m.recipients)


class SMTPServer:
    def __init__(self, *, pipelining: bool = True) -> None:
        self.recorder = Recorder(pipelining=pipelining)
        self.port = free_port()
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, decode_data=False)

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
