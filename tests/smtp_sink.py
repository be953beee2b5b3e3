"""Postfix's smtp-sink on 127.0.0.1, told by its own options which commands to refuse, writing each message it takes to a file.

smtp-sink announces PIPELINING unless it refuses commands with -f (5xx) or -r (4xx); -Q answers
421 and disconnects after the named commands, -q disconnects after them without replying.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.smtp_server import free_port


class SmtpSink:
    def __init__(self, folder: Path, *options: str) -> None:
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not Path(binary).exists():
            raise FileNotFoundError("smtp-sink (Debian package postfix) is not installed")
        self.port = free_port()
        self.dumps = folder / "dumps"
        self.dumps.mkdir(parents=True)
        command = [binary, "-4", "-d", f"{self.dumps}/%M.", *options]
        if os.geteuid() == 0:
            command += ["-u", pwd.getpwuid(0).pw_name]  # smtp-sink refuses to run as root without it
        self.log = (folder / "smtp-sink.log").open("wb")
        self.process = subprocess.Popen([*command, f"127.0.0.1:{self.port}", "64"], stdout=self.log, stderr=self.log)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.recv(100)
                    probe.sendall(b"QUIT\r\n")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"smtp-sink did not listen on 127.0.0.1:{self.port} within 10 s") from None
                time.sleep(0.05)

    def messages(self) -> list[bytes]:
        """Each message smtp-sink took, as it wrote it: its X-Mail-Args / X-Rcpt-Args headers, then the message."""
        return [path.read_bytes() for path in sorted(self.dumps.rglob("*")) if path.is_file()]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
