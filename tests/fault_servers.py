"""SMTP servers that fail the way real relays do, for the exactly-once tests (aiosmtpd, 127.0.0.1).

On top of tests/smtp_server.py's recipients (temp-N, perm, drop, bye):
  lost-*@...   the message is received whole, then the connection is closed without a reply (first time only)
  late-*@...   the message is received whole, the 250 comes `late_seconds` later (first time only)
and, for every recipient, `mail_reply` answers MAIL FROM (e.g. 530: authentication required).
The server can be stopped and started again on the same port (a relay that goes away and comes back).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServerProtocol

from tests.smtp_server import Received, Recorder, SMTPServer


@dataclass
class FaultRecorder(Recorder):
    mail_reply: str | None = None
    late_seconds: float = 3.0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServerProtocol, session: Any, envelope: Any) -> str:
        [rcpt] = envelope.rcpt_tos
        local = rcpt.split("@")[0]
        if not local.startswith(("lost", "late")):
            return await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.attempts[rcpt] += 1
            first = self.attempts[rcpt] == 1
            self.messages.append(Received([rcpt], envelope.original_content, time.monotonic()))
            self.lock.notify_all()
        if first and local.startswith("lost"):
            transport = server.transport
            assert isinstance(transport, asyncio.WriteTransport)
            transport.close()
            return "451 gone"
        if first:
            await asyncio.sleep(self.late_seconds)
        return "250 2.0.0 queued"


class FaultServer(SMTPServer):
    recorder: FaultRecorder

    def __init__(self) -> None:
        super().__init__()
        self.recorder = FaultRecorder()
        self.controller = self._controller()

    def __enter__(self) -> FaultServer:
        self.controller.start()
        return self

    def _controller(self) -> Controller:
        return Controller(self.recorder, hostname="127.0.0.1", port=self.port, decode_data=False)

    def stop(self) -> None:
        self.controller.stop()

    def start_again(self) -> None:
        self.controller = self._controller()
        self.controller.start()
