"""How fast `mailer send` delivers one issue to a list, against Postfix's smtp-source on the same sink.

Run: .venv/bin/python bench/send.py [--recipients 20000] [--pool 16] [--postgres] [--messages 2000]
     .venv/bin/python bench/send.py --data-seam [--messages 2000]   # only the DATA seam rows, ~10 s
Needs Postfix's test tools smtp-sink and smtp-source (`apt-get install postfix`; the Postfix
daemon is not used). Generates a list of N subscribers in a temporary SQLite database (and,
with --postgres, a temporary schema on postgres@127.0.0.1:5432/test), then runs
send_to_list() in a fresh child process (so its peak RSS covers only the send) against
smtp-sink on a free local port. Baselines in the same run: smtp-source sending as many
messages (at most 20,000) of the same bytes over as many connections to the same sink, and
the stdlib building one EmailMessage per recipient.

Prints message size, messages/s and CPU µs per message for both senders (and the sink's
share), the ratio, the child's peak RSS, and the ledger's status line. Exit status 0 when
every message was sent and counted by the sink, 1 otherwise, 2 without Postfix's tools.
The machine is noisy: only compare figures from within one run.

The DATA seam rows (also alone, with --data-seam; needs only smtp-sink): --messages copies of
the same ~61 KB canonical message, each way over one connection to smtp-sink, interleaved in
rounds: mailer.delivery.smtp._data (writes the bytes as they are) against aiosmtplib's own
SMTP.data() (normalises line endings and dot-stuffs every message). CPU µs per message is this
process's time.process_time() for MAIL + RCPT + DATA, so the difference is what the seam saves;
also the median cost of aiosmtplib's two regex passes alone against wire.is_canonical's scan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import email.message
import email.policy
import email.utils
import json
import os
import pwd
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ISSUE = ROOT / "issues" / "2016-02.yaml"
LIST = "bench"
SENDER = "ICMPD Newsletter <newsletter@icmpd.org>"
SECRET = "x" * 40
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BASELINE_MAX = 20_000
TOOLS = ("smtp-sink", "smtp-source")


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if os.access(p, os.X_OK)), None
    )


def make_settings(
    port: int, database_url: str, pool: int, bounce_address: str | None = None, *, pipelining: bool = True
) -> Any:
    from mailer.settings import load_settings

    return load_settings(
        ROOT / "mailer.toml",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls="none",
        sender=SENDER,
        unsubscribe_secret=SECRET,
        database_url=database_url,
        smtp_pool_size=pool,
        smtp_pipelining=pipelining,
        bounce_address=bounce_address,
    )


def memory_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process in KB, from /proc (Linux); 0 elsewhere.

    Not ru_maxrss: a child started by subprocess inherits its parent's peak there.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def reset_peak_memory() -> bool:
    """Start VmHWM again from the current RSS (Linux 4.0+), so the peak covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a running process has used so far, from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the send itself, in a child process -------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """Run one send_to_list and print its figures as one JSON line."""
    from mailer.audience.database import open_database
    from mailer.delivery import ledger
    from mailer.delivery.send import run, send_to_list

    ledger.SQLITE_SYNCHRONOUS = args.synchronous
    settings = make_settings(
        args.port, args.database_url, args.pool, args.bounce_address, pipelining=not args.no_pipelining
    )
    engine = open_database(args.database_url)
    peak_before = memory_kb("VmHWM")
    rss_start = memory_kb("VmRSS")
    reset = reset_peak_memory()
    cpu_before = cpu_seconds()
    first: list[float] = []

    def progress(sent: int, failed: int, *_: int) -> None:
        if not first:  # steady state starts at the first outcome: after render, ledger prepare, connect
            first.extend((time.perf_counter(), cpu_seconds(), sent + failed))

    started = time.perf_counter()
    summary = run(send_to_list(engine, settings, ISSUE, LIST, progress=progress))
    ended = time.perf_counter()
    cpu_end = cpu_seconds()
    wall, cpu = ended - started, cpu_end - cpu_before
    done = summary.sent + summary.failed_temporary + summary.failed_permanent
    steady = done - first[2] if first else 0
    engine.dispose()
    result = {
        "wall": wall,
        "cpu": cpu,
        "sent": summary.sent,
        "failed": summary.failed_temporary + summary.failed_permanent,
        "summary": summary.line(),
        "steady_rate": steady / (ended - first[0]) if steady else 0.0,
        "steady_cpu": (cpu_end - first[1]) / steady if steady else 0.0,
        "peak_before_kb": peak_before,
        "peak_kb": memory_kb("VmHWM") if reset else max(memory_kb("VmHWM"), peak_before),
        "peak_is_send_only": reset,
        "rss_start_kb": rss_start,
        "rss_end_kb": memory_kb("VmRSS"),
    }
    print(json.dumps(result), flush=True)


# --- smtp-sink ---------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Sink:
    """smtp-sink on 127.0.0.1:<free port>, counting messages (-c) into a file."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.port = free_port()
        self.counter = folder / "sink.out"
        command = [binary, "-c", "-4"]
        if os.geteuid() == 0:
            command += ["-u", pwd.getpwuid(0).pw_name]  # required when run as root
        command += [f"127.0.0.1:{self.port}", "1000"]
        self._out = self.counter.open("wb")
        self.process = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"smtp-sink exited with {self.process.returncode}: {self.counter.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.recv(100)
                    conn.sendall(b"QUIT\r\n")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"smtp-sink did not start listening on 127.0.0.1:{self.port}") from None
                time.sleep(0.05)

    def messages(self) -> int:
        """Messages received so far, from smtp-sink's running counter (`... mesg=N`)."""
        self._out.flush()
        found = re.findall(rb"mesg=(\d+)", self.counter.read_bytes()[-200:])
        return int(found[-1]) if found else 0

    def cpu(self) -> float | None:
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


class DelayRelay:
    """bench/delay_relay.py in its own process, between mailer and smtp-sink: `rtt_ms` added to every round trip."""

    def __init__(self, target: int, rtt_ms: float) -> None:
        script = Path(__file__).with_name("delay_relay.py")
        command = [sys.executable, str(script), "--to", str(target), "--delay", str(rtt_ms / 2000)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening on 127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the delay relay did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


# --- measurements ------------------------------------------------------------------------------


def median_us(fn: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def recipients(count: int) -> list[Any]:
    from mailer.delivery.message import Recipient
    from mailer.delivery.unsubscribe import make_token, unsubscribe_url

    base = "https://newsletter.icmpd.org"  # the public_url of mailer.toml
    return [
        Recipient(email, name, unsubscribe_url(base, make_token(SECRET, i + 1, 1)))
        for i, (email, name) in enumerate(people(count))
    ]


def people(count: int) -> Iterator[tuple[str, str]]:
    """Generated subscribers; every tenth has a non-ASCII name (an encoded To: header)."""
    for i in range(count):
        name = f"Zoë Müller {i}" if i % 10 == 0 else f"Person {i}"
        yield f"person{i}@example{i % 97}.org", name


def micro(template: Any, rendered: Any, subject: str, builds: int) -> tuple[float, float]:
    """Median µs to build one recipient's message: MessageTemplate.build vs a stdlib EmailMessage."""
    from mailer.compose.render import PLACEHOLDERS

    people_ = recipients(builds)
    date = dt.datetime.now(dt.UTC)

    def mailer_build(i: int) -> bytes:
        return bytes(template.build(people_[i], message_id=template.new_message_id(), date=date))

    def stdlib_build(i: int) -> bytes:
        person = people_[i]
        values = {"email": person.email, "name": person.name, "unsubscribe_url": person.unsubscribe_url}
        text, html_ = rendered.text, rendered.email_html
        for key, placeholder in PLACEHOLDERS.items():
            text = text.replace(placeholder, values[key])
            html_ = html_.replace(placeholder, values[key])
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        message["From"] = SENDER
        message["To"] = email.utils.formataddr((person.name, person.email))
        message["Subject"] = subject
        message["Date"] = email.utils.format_datetime(date)
        message["Message-ID"] = template.new_message_id()
        message["List-Unsubscribe"] = f"<{person.unsubscribe_url}>"
        message.set_content(text)
        message.add_alternative(html_, subtype="html")
        return message.as_bytes()

    return median_us(mailer_build, builds), median_us(stdlib_build, builds)


def on_uvloop(coroutine: Any) -> Any:
    """Run as `mailer send` does: on uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


DATA_WAYS = ("mailer _data", "aiosmtplib SMTP.data()")


def data_seam(port: int, sample: bytes, count: int, rounds: int = 4) -> dict[str, Any]:
    """Send `count` copies of `sample` each way over one connection, in alternating rounds.

    Returns per way the messages sent, wall and CPU seconds (time.process_time: this process,
    client side only; smtp-sink is another process), and the median µs of the DATA transforms.
    """
    import aiosmtplib
    from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

    from mailer.delivery.smtp import _data
    from mailer.delivery.wire import is_canonical

    async def mailer_way(smtp: aiosmtplib.SMTP, data: bytes) -> Any:
        return await _data(smtp, data, 30)

    async def aiosmtplib_way(smtp: aiosmtplib.SMTP, data: bytes) -> Any:
        return await smtp.data(data, timeout=30)

    ways = dict(zip(DATA_WAYS, (mailer_way, aiosmtplib_way), strict=True))
    figures: dict[str, Any] = {name: {"sent": 0, "wall": 0.0, "cpu": 0.0} for name in ways}
    per_round = -(-count // rounds)
    sender, recipient = "newsletter@icmpd.org", "person1@example1.org"

    async def go() -> None:
        connections = {}
        for name, way in ways.items():
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
            await smtp.connect()
            await smtp.mail(sender)
            await smtp.rcpt(recipient)
            await way(smtp, sample)  # warm-up, not counted
            connections[name] = smtp
        for round_ in range(rounds):
            for name in DATA_WAYS if round_ % 2 == 0 else DATA_WAYS[::-1]:
                smtp, way, row = connections[name], ways[name], figures[name]
                n = min(per_round, count - row["sent"])
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(n):
                    await smtp.mail(sender)
                    await smtp.rcpt(recipient)
                    response = await way(smtp, sample)
                    if response.code != 250:
                        raise SystemExit(f"{name}: smtp-sink answered {response.code} {response.message}")
                row["wall"] += time.perf_counter() - wall
                row["cpu"] += time.process_time() - cpu
                row["sent"] += n
        for smtp in connections.values():
            await smtp.quit()

    on_uvloop(go())
    plain = bytes(sample)
    figures["transform_us"] = median_us(lambda _: PERIOD_REGEX.sub(b"..", normalize_message_line_endings(plain)), 200)
    figures["scan_us"] = median_us(lambda _: is_canonical(plain), 200)
    figures["wire_us"] = median_us(lambda _: is_canonical(sample), 200)
    return figures


def report_data_seam(figures: dict[str, Any], size: int, count: int, received: int) -> bool:
    """Print the DATA seam rows; False if smtp-sink did not count every message."""
    print(
        f"\nDATA seam: {count} messages of {size / 1024:.1f} KB (canonical) each way, one connection each, "
        "to smtp-sink; MAIL + RCPT + DATA, CPU of this process"
    )
    ours, theirs = (figures[name] for name in DATA_WAYS)
    for name, label in zip(
        DATA_WAYS, ("mailer _data (bytes as they are)", "baseline aiosmtplib SMTP.data()"), strict=True
    ):
        row = figures[name]
        print(rate_line(label, row["sent"], row["wall"], row["cpu"], -1))
    ours_cpu, theirs_cpu = ours["cpu"] / ours["sent"], theirs["cpu"] / theirs["sent"]
    print(
        f"  {'CPU per message aiosmtplib/mailer':34} {theirs_cpu / ours_cpu:7.1f}x  "
        f"(the seam saves {(theirs_cpu - ours_cpu) * 1e6:.0f} µs/msg)"
    )
    print(
        f"  {'median µs, the transforms alone':34} aiosmtplib normalise + dot-stuff {figures['transform_us']:.0f}, "
        f"is_canonical scan of plain bytes {figures['scan_us']:.0f}, of WireBytes {figures['wire_us']:.2f}"
    )
    expected = 2 * (count + 1)  # and one warm-up message each way
    if received != expected:
        print(f"  PROBLEM: smtp-sink counted {received} of {expected} messages")
        return False
    return True


def run_data_seam(sink: Sink, sample: bytes, count: int) -> bool:
    before = sink.messages()
    figures = data_seam(sink.port, sample, count)
    deadline = time.monotonic() + 5  # smtp-sink counts a message a moment after its 250
    while sink.messages() - before < 2 * (count + 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    return report_data_seam(figures, len(sample), count, sink.messages() - before)


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,language,organisation\n")
        for i, (address, name) in enumerate(people(count)):
            out.write(f"{address},{name},{('en', 'fr', 'de')[i % 3]},Org {i % 50}\n")


def baseline(
    binary: str, sink: Sink, message_file: Path, count: int, sessions: int, port: int | None = None
) -> dict[str, float]:
    before_msgs, before_sink = sink.messages(), sink.cpu()
    cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN)
    command = [binary, "-d", "-s", str(sessions), "-r", "1", "-m", str(count), "-F", str(message_file)]
    started = time.perf_counter()
    subprocess.run([*command, f"127.0.0.1:{port or sink.port}"], check=True)
    wall = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before
    time.sleep(0.2)
    after_sink = sink.cpu()
    return {
        "wall": wall,
        "cpu": cpu,
        "received": sink.messages() - before_msgs,
        "sink_cpu": (after_sink - before_sink) if after_sink is not None and before_sink is not None else -1,
    }


def report_verp(plain: dict[str, Any], verp: dict[str, Any]) -> None:
    """What naming each delivery in its envelope sender costs: the same send with and without bounce_address."""
    from mailer.delivery.verp import VerpAddresses

    addresses = VerpAddresses("bounces@icmpd.org", SECRET)
    rounds = 100_000
    started = time.perf_counter()
    for delivery_id in range(1, rounds + 1):
        addresses.address(delivery_id, "ana.example@example.org")
    each = (time.perf_counter() - started) / rounds * 1e6
    if "error" in plain or "error" in verp:
        return
    rates = {name: r["sent"] / r["wall"] for name, r in (("plain", plain), ("verp", verp))}
    cpu = {name: r["cpu"] / max(r["sent"], 1) * 1e6 for name, r in (("plain", plain), ("verp", verp))}
    print("VERP (SQLite ledger FULL, same run)")
    print(
        f"  {'bounce_address set / unset':34} {rates['verp']:7.0f}/s vs {rates['plain']:.0f}/s  "
        f"({rates['verp'] / rates['plain']:.2f}x); CPU {cpu['verp']:.0f} vs {cpu['plain']:.0f} µs/msg; "
        f"one VERP address: {each:.2f} µs"
    )


def run_database(
    label: str,
    url: str,
    folder: Path,
    count: int,
    sink: Sink,
    pool: int,
    *,
    synchronous: str = "FULL",
    bounce_address: str | None = None,
    pipelining: bool = True,
    port: int | None = None,
    senders: int = 1,
) -> dict[str, Any]:
    """Import `count` recipients, then send to them from `senders` child processes at once (PostgreSQL for more than one)."""
    from mailer.audience.database import open_database
    from mailer.audience.lists import create_list
    from mailer.audience.subscriber_csv import import_subscribers
    from mailer.delivery.delivery_status import delivery_status

    csv_path = folder / "people.csv"
    if not csv_path.exists():
        write_csv(csv_path, count)
    engine = open_database(url)
    started = time.perf_counter()
    create_list(engine, LIST)
    report = import_subscribers(engine, LIST, csv_path)
    imported = time.perf_counter() - started
    if report.added != count:
        raise SystemExit(f"{label}: import added {report.added} of {count}: {report.lines()[:5]}")
    before_msgs, before_sink = sink.messages(), sink.cpu()
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    command += ["--database-url", url, "--port", str(port or sink.port), "--pool", str(pool)]
    command += ["--synchronous", synchronous]
    command += ["--bounce-address", bounce_address] if bounce_address else []
    command += [] if pipelining else ["--no-pipelining"]
    if PROFILE.folder is not None:
        PROFILE.runs += 1
        raw = PROFILE.folder / f"{PROFILE.runs:02d}-{label.split()[0].lower()}.txt"
        command = [*PROFILE.command(raw), *command]
    started = time.perf_counter()
    children = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(senders)
    ]
    outputs = [child.communicate() for child in children]
    elapsed = time.perf_counter() - started
    results = []
    for process, (stdout, stderr) in zip(children, outputs, strict=True):
        lines = [line for line in stdout.splitlines() if line.startswith("{")]  # py-spy, if used, prints too
        if process.returncode != 0 or not lines:
            results = [{"wall": elapsed, "error": short_traceback(stderr), "exit": process.returncode}]
            break
        results.append(json.loads(lines[-1]))
    result = results[0] if len(results) == 1 else combined(results, elapsed)
    time.sleep(0.2)
    after_sink = sink.cpu()
    result["received"] = sink.messages() - before_msgs
    result["sink_cpu"] = (after_sink - before_sink) if after_sink is not None and before_sink is not None else -1
    result["import"] = imported
    result["status"] = delivery_status(engine, ISSUE.stem, LIST).lines()[0]
    engine.dispose()
    result["commands"] = {
        "status": timed_command(url, "status", str(ISSUE), "--list", LIST),
        "report": timed_command(url, "report", ISSUE.stem, "--list", LIST),
    }
    return result


def timed_command(url: str, *args: str) -> float:
    """Wall seconds of `mailer ARGS` as a user runs it (a fresh process, start-up included) on the bench ledger."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=ROOT,
        env={**os.environ, "MAILER_DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"mailer {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return time.perf_counter() - started


def combined(results: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """Several senders' figures as one: their messages and CPU added up over the wall time of the slowest."""
    total = {key: sum(r[key] for r in results) for key in ("sent", "failed", "cpu")}
    steady = sum(r["steady_rate"] for r in results)
    return {
        **results[0],
        **total,
        "wall": max(r["wall"] for r in results),
        "steady_rate": steady,
        "steady_cpu": sum(r["steady_cpu"] for r in results) / len(results),
        "peak_kb": max(r["peak_kb"] for r in results),
        "summary": " | ".join(r["summary"] for r in results),
        "elapsed": elapsed,
    }


def report_senders(one: dict[str, Any], two: dict[str, Any]) -> None:
    """Two processes sharing one send on PostgreSQL against one process alone."""
    if "error" in one or "error" in two:
        return
    rates = [r["sent"] / r["wall"] for r in (one, two)]
    print("senders (PostgreSQL ledger, same run)")
    print(f"  {'two processes / one':34} {rates[1]:7.0f}/s vs {rates[0]:.0f}/s  ({rates[1] / rates[0]:.2f}x)")


@dataclasses.dataclass
class Profile:
    """--profile: each send child runs under py-spy (sampling, GIL-holding time only), and its top lines are printed."""

    folder: Path | None = None
    runs: int = 0
    last: Path = Path("/nonexistent")

    def command(self, raw: Path) -> list[str]:
        self.last = raw
        binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        return [binary, "record", "--gil", "--rate", "250", "--format", "raw", "--output", str(raw), "--"]

    def report(self, top: int = 14) -> None:
        if self.folder is None or not self.last.exists():
            return
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.last.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            frames = [short_frame(f) for f in stack.split(";")]
            total += count
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for frame in set(frames):
                if "mailer/" in frame or "sqlalchemy" in frame or "aiosmtplib" in frame:
                    inclusive[frame] = inclusive.get(frame, 0) + count
        print(f"  profile ({total} samples with the GIL held; {self.last.name}): own time")
        for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {count / total:6.1%}  {frame}")
        print("  including what they call (mailer, SQLAlchemy, aiosmtplib)")
        for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {count / total:6.1%}  {frame}")


def short_frame(frame: str) -> str:
    """`name (path:line)` with the path cut to its package: `claim (mailer/delivery/ledger.py:459)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"


PROFILE = Profile()


def short_traceback(stderr: str) -> list[str]:
    """The frames of a child's traceback that are in mailer's own code, and the error itself."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    kept = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("File ") and "/mailer/" in line and "/bench/" not in line:
            kept += [line.strip(), *(lines[i + 1 : i + 2])]
    errors = [line for line in lines if not line.startswith((" ", "\t", "(", "Traceback", "The above", "During"))]
    return [*kept, (errors or lines or ["(no output)"])[-1]]


@contextlib.contextmanager
def postgres_schema() -> Iterator[str | None]:
    """A throw-away schema on the local PostgreSQL, or None (with the reason printed) if unreachable."""
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception as error:  # noqa: BLE001 - any failure means: skip PostgreSQL
        print(f"PostgreSQL skipped: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}")
        yield None
        return
    schema = f"bench_send_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# --- report ------------------------------------------------------------------------------------


def rate_line(label: str, messages: int, wall: float, cpu: float, sink_cpu: float) -> str:
    sink = f"  sink CPU {sink_cpu / messages * 1e6:5.0f} µs/msg" if sink_cpu >= 0 and messages else ""
    return (
        f"  {label:34} {messages:7d} msgs {wall:7.2f} s {messages / wall:7.0f}/s"
        f"  CPU {cpu / max(messages, 1) * 1e6:5.0f} µs/msg{sink}"
    )


def report_send(label: str, result: dict[str, Any], base: dict[str, float], base_count: int, count: int) -> bool:
    """Print one database's figures; False if not every message was sent and received."""
    print(label)
    print(f"  set-up, not in the figures: create list + import {count} recipients from CSV {result['import']:.2f} s")
    if "error" in result:
        print(f"  PROBLEM: send_to_list failed after {result['wall']:.2f} s (child exit {result['exit']}):")
        for line in result["error"]:
            print(f"    | {line}")
        print(f"  ledger:  {result['status']}")
        print(f"  smtp-sink counted {result['received']} messages before the failure")
        return False
    PROFILE.report()
    sent = result["sent"]
    mailer_rate = sent / result["wall"]
    base_rate = base_count / base["wall"]
    print(rate_line("mailer send_to_list (child process)", sent, result["wall"], result["cpu"], result["sink_cpu"]))
    print(
        f"  {'  from the first delivery on':34} {'':23} {result['steady_rate']:7.0f}/s  "
        f"CPU {result['steady_cpu'] * 1e6:5.0f} µs/msg  (without the render and ledger set-up)"
    )
    mb = {key: result[key] / 1024 for key in ("peak_kb", "peak_before_kb", "rss_start_kb", "rss_end_kb")}
    label = "peak RSS during the send" if result["peak_is_send_only"] else "peak RSS of the child"
    print(
        f"  {label:34} {mb['peak_kb']:7.0f} MB  (RSS {mb['rss_start_kb']:.0f} MB when it started, "
        f"{mb['rss_end_kb']:.0f} MB at the end; imports and database open peaked at {mb['peak_before_kb']:.0f} MB)"
    )
    if result["cpu"] >= 0 and base["cpu"] > 0:
        mailer_cpu, base_cpu = result["cpu"] / max(sent, 1), base["cpu"] / base_count
        print(f"  {'CPU per message mailer/smtp-source':34} {mailer_cpu / base_cpu:7.1f}x")
    ratio = f"{mailer_rate / base_rate:7.2f}  ({mailer_rate:.0f}/s vs {base_rate:.0f}/s)"
    print(f"  {'ratio mailer/smtp-source (msgs/s)':34} {ratio}")
    print(f"  summary: {result['summary']}")
    print(f"  ledger:  {result['status']}")
    commands = result["commands"]
    print(
        f"  {'mailer status / mailer report':34} {commands['status']:7.2f} s / {commands['report']:.2f} s  "
        f"(each a fresh process on this ledger of {count:,} rows, start-up included)"
    )
    print(f"  smtp-sink counted {result['received']} messages during the send")
    if result["failed"] or sent != count or result["received"] != count:
        print(f"  PROBLEM: expected {count} sent and received; see the lines above")
        return False
    return True


def report_pipelining(where: str, pipelined: dict[str, Any], one: dict[str, Any]) -> None:
    """The pipelining row: the same send with smtp_pipelining on and off, same pool size."""
    if "error" in pipelined or "error" in one:
        return
    rates = {name: r["sent"] / r["wall"] for name, r in (("on", pipelined), ("off", one))}
    steady = {name: r["steady_rate"] for name, r in (("on", pipelined), ("off", one))}
    print(f"pipelining ({where}, SQLite ledger FULL, same run)")
    print(
        f"  {'smtp_pipelining on / off':34} {rates['on']:7.0f}/s vs {rates['off']:.0f}/s  "
        f"({rates['on'] / rates['off']:.2f}x); from the first delivery on {steady['on']:.0f}/s vs "
        f"{steady['off']:.0f}/s ({steady['on'] / max(steady['off'], 1e-9):.2f}x)"
    )


def run_relay(folder: Path, count: int, sink: Sink, pool: int, rtt_ms: float, source: str, message_file: Path) -> bool:
    """The far-relay rows: smtp-source, then mailer pipelined and not, through DelayRelay."""
    relay = DelayRelay(sink.port, rtt_ms)
    ok = True
    try:
        print(f"\nthrough a relay adding {rtt_ms:g} ms to each round trip (bench/delay_relay.py), {count} recipients")
        base = baseline(source, sink, message_file, count, pool, port=relay.port)
        print(rate_line(f"baseline smtp-source -d -s {pool} -r 1", count, base["wall"], base["cpu"], base["sink_cpu"]))
        results = {}
        for pipelining in (True, False):
            label = "pipelined" if pipelining else "one-by-one"
            where = folder / f"relay-{label}"
            where.mkdir()
            url = f"sqlite:///{where}/bench.sqlite3"
            result = run_database("SQLite", url, folder, count, sink, pool, pipelining=pipelining, port=relay.port)
            results[label] = result
            ok = report_send(f"SQLite (FULL), {label}, through the relay", result, base, count, count) and ok
        report_pipelining(f"{rtt_ms:g} ms round trip", results["pipelined"], results["one-by-one"])
    finally:
        relay.stop()
    return ok


def report_durability(full: dict[str, Any], normal: dict[str, Any]) -> None:
    """The durability row: what syncing the WAL at every ledger commit (claims and outcomes) costs."""
    if "error" in full or "error" in normal:
        return
    rates = {name: r["sent"] / r["wall"] for name, r in (("FULL", full), ("NORMAL", normal))}
    cpu = {name: r["cpu"] / max(r["sent"], 1) * 1e6 for name, r in (("FULL", full), ("NORMAL", normal))}
    print("durability (SQLite ledger, same run)")
    print(
        f"  {'synchronous FULL / NORMAL':34} {rates['FULL']:7.0f}/s vs {rates['NORMAL']:.0f}/s  "
        f"({rates['FULL'] / rates['NORMAL']:.2f}x); CPU {cpu['FULL']:.0f} vs {cpu['NORMAL']:.0f} µs/msg"
    )


def data_seam_only(count: int) -> int:
    """--data-seam: build the message as the full run does, then only the DATA seam rows; the exit status."""
    from mailer.delivery.message import Recipient
    from mailer.delivery.send import build_template
    from mailer.delivery.unsubscribe import make_token, unsubscribe_url

    binary = find_tool("smtp-sink")
    if binary is None:
        print("smtp-sink not found: apt-get install postfix (only its test tools are used)", file=sys.stderr)
        return 2
    settings = make_settings(1025, "sqlite:///unused.sqlite3", 1)
    _, template = build_template(ISSUE, settings, list_name=LIST)
    first = Recipient(
        "person1@example1.org", "Person 1", unsubscribe_url(settings.archive_url, make_token(SECRET, 2, 1))
    )
    sample = template.build(first, message_id=template.new_message_id(), date=dt.datetime.now(dt.UTC))
    print("mailer DATA seam benchmark. This machine is noisy: compare figures within one run only.")
    print(f"{os.cpu_count()} CPUs, load average {load()} at start")
    with tempfile.TemporaryDirectory(prefix="mailer-bench-data-") as tmp:
        sink = Sink(binary, Path(tmp))
        try:
            ok = run_data_seam(sink, sample, count)
        finally:
            sink.stop()
    print(f"load average {load()} at the end")
    return 0 if ok else 1


def sqlite_url(folder: Path, name: str) -> str:
    (folder / name).mkdir()
    return f"sqlite:///{folder / name}/bench.sqlite3"


@dataclasses.dataclass
class Rows:
    """The rows after smtp-source and SQLite FULL, each against that same baseline, in one run."""

    args: argparse.Namespace
    folder: Path
    sink: Sink
    base: dict[str, float]
    base_count: int
    source: str
    message_file: Path

    def send(self, title: str, url: str, **options: Any) -> tuple[bool, dict[str, Any]]:
        count, pool = self.args.recipients, self.args.pool
        result = run_database(title, url, self.folder, count, self.sink, pool, **options)
        return report_send(title, result, self.base, self.base_count, count), result

    def run(self, full: dict[str, Any], sample: bytes) -> bool:
        folder = self.folder
        ok, one = self.send("SQLite (FULL, smtp_pipelining=false)", sqlite_url(folder, "one"), pipelining=False)
        report_pipelining("loopback", full, one)
        good, normal = self.send(
            "SQLite (synchronous=NORMAL, not durable)", sqlite_url(folder, "normal"), synchronous="NORMAL"
        )
        ok = good and ok
        report_durability(full, normal)
        good, verp = self.send(
            "SQLite (FULL, VERP: bounce_address set)", sqlite_url(folder, "verp"), bounce_address="bounces@icmpd.org"
        )
        ok = good and ok
        report_verp(full, verp)
        relay_count = min(self.args.relay_recipients, self.args.recipients)
        relay_folder = folder / "relay"
        relay_folder.mkdir()
        ok = (
            run_relay(
                relay_folder, relay_count, self.sink, self.args.pool, self.args.rtt, self.source, self.message_file
            )
            and ok
        )
        if self.args.postgres:
            ok = self.postgres() and ok
        return run_data_seam(self.sink, sample, self.args.messages) and ok

    def postgres(self) -> bool:
        """One sender on PostgreSQL, then two processes sharing one send, against smtp-source timed again just before.

        On a shared machine the rate drifts over a long run: a baseline from minutes earlier would skew the ratio.
        """
        if self.args.only != "postgres":
            self.base = baseline(self.source, self.sink, self.message_file, self.base_count, self.args.pool)
            label = f"baseline smtp-source -d -s {self.args.pool} -r 1, again"
            print(rate_line(label, self.base_count, self.base["wall"], self.base["cpu"], self.base["sink_cpu"]))
        ok = True
        with postgres_schema() as url:
            if url is None:
                return False
            ok, one = self.send("PostgreSQL", url)
        with postgres_schema() as url:
            if url is None:
                return False
            good, two = self.send("PostgreSQL, two mailer send processes on one send", url, senders=2)
            report_senders(one, two)
        return good and ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--pool", type=int, default=16, help="smtp_pool_size, and smtp-source's -s sessions")
    parser.add_argument("--postgres", action="store_true", help="also send from PostgreSQL on 127.0.0.1:5432")
    parser.add_argument("--builds", type=int, default=2000, help="builds for the message micro-benchmark")
    parser.add_argument("--messages", type=int, default=2000, help="messages each way for the DATA seam rows")
    parser.add_argument("--data-seam", action="store_true", help="only the DATA seam rows (needs smtp-sink only)")
    parser.add_argument("--profile", type=Path, help="run each send under py-spy, raw profiles into this folder")
    parser.add_argument(
        "--only",
        choices=["sqlite", "postgres"],
        help="only smtp-source and the SQLite FULL send (the million), or the PostgreSQL rows (with --postgres)",
    )
    parser.add_argument("--rtt", type=float, default=10, help="ms the far-relay rows add to each round trip")
    parser.add_argument("--relay-recipients", type=int, default=5000, help="recipients for the far-relay rows")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--synchronous", default="FULL", help=argparse.SUPPRESS)
    parser.add_argument("--bounce-address", help=argparse.SUPPRESS)
    parser.add_argument("--no-pipelining", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.child:
        child(args)
        return

    if args.data_seam:
        sys.exit(data_seam_only(args.messages))
    if args.profile is not None:
        if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE.folder = args.profile

    tools = {name: find_tool(name) for name in TOOLS}
    if not all(tools.values()):
        missing = ", ".join(name for name, path in tools.items() if not path)
        print(f"{missing} not found: apt-get install postfix (only its test tools are used)", file=sys.stderr)
        sys.exit(2)

    from mailer.compose.load import load_issue
    from mailer.compose.render import render_issue
    from mailer.delivery.message import Recipient
    from mailer.delivery.send import build_template
    from mailer.delivery.unsubscribe import make_token, unsubscribe_url

    count, pool = args.recipients, args.pool
    settings = make_settings(1025, "sqlite:///unused.sqlite3", pool)
    started = time.perf_counter()
    slug, template = build_template(ISSUE, settings, list_name=LIST)
    render_seconds = time.perf_counter() - started
    issue = load_issue(ISSUE)
    rendered = render_issue(issue, slug, settings)
    first = Recipient(
        "person1@example1.org", "Person 1", unsubscribe_url(settings.archive_url, make_token(SECRET, 2, 1))
    )
    sample = template.build(first, message_id=template.new_message_id(), date=dt.datetime.now(dt.UTC))
    base_count = min(count, BASELINE_MAX)

    print("mailer send benchmark. This machine is noisy (±15% between runs): compare figures within one run only.")
    print(f"{os.cpu_count()} CPUs, load average {load()} at start")
    print(
        f"issue {slug}, {count} recipients, {pool} connections, message {len(sample)} bytes "
        f"({len(sample) / 1024:.1f} KB; render + MIME template once: {render_seconds * 1000:.0f} ms)"
    )

    mailer_us, stdlib_us = micro(template, rendered, issue.email_subject, args.builds)
    print(f"\nbuilding one recipient's message, median µs of {args.builds} builds (each a different recipient)")
    print(f"  mailer MessageTemplate.build          {mailer_us:9.1f}")
    print(f"  baseline stdlib EmailMessage          {stdlib_us:9.1f}  ({stdlib_us / mailer_us:.0f}x mailer)")

    with tempfile.TemporaryDirectory(prefix="mailer-bench-send-") as tmp:
        folder = Path(tmp)
        message_file = folder / "message.eml"
        # smtp-source -F appends CRLF to every line itself: LF here gives the same bytes on the wire
        message_file.write_bytes(sample.replace(b"\r\n", b"\n"))
        sink = Sink(str(tools["smtp-sink"]), folder)
        try:
            ok = True
            print(f"\ndelivery to smtp-sink on 127.0.0.1:{sink.port}")
            base = baseline(str(tools["smtp-source"]), sink, message_file, base_count, pool)
            print(
                rate_line(
                    f"baseline smtp-source -d -s {pool} -r 1", base_count, base["wall"], base["cpu"], base["sink_cpu"]
                )
            )
            if base["received"] != base_count:
                print(f"  PROBLEM: smtp-sink counted {base['received']} of {base_count} baseline messages")
                ok = False
            rows = Rows(args, folder, sink, base, base_count, str(tools["smtp-source"]), message_file)
            if args.only == "postgres":
                ok = rows.postgres() and ok
            else:
                result = run_database("SQLite", sqlite_url(folder, "sqlite"), folder, count, sink, pool)
                ok = report_send("SQLite (ledger synchronous=FULL)", result, base, base_count, count) and ok
                if args.only is None:
                    ok = rows.run(result, sample) and ok
        finally:
            sink.stop()
    print(
        "\nCPU µs/msg: the mailer child's user+system time per message (all threads: the one render above, "
        "ledger, SMTP); smtp-source's own time per message; sink CPU is smtp-sink's share."
    )
    print(f"load average {load()} at the end")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
