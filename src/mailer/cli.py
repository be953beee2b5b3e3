"""The command line: parse flags, call one library function, print its result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
from collections.abc import Callable, Collection, Iterator
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from mailer.errors import ExitStatus, MailerError
from mailer.wording import plural

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from mailer.delivery.send import SendSummary
    from mailer.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: $MAILER_CONFIG or ./mailer.toml).",
)

host_option = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless you say otherwise)."
)
issues_option = click.option(
    "--issues", "issues_dir", type=click.Path(path_type=Path, file_okay=False), help="Folder of issue files."
)


def output_option(dest: str, *, folder: bool, help: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """-o/--output, naming a folder or a file."""
    kind = click.Path(path_type=Path, file_okay=not folder, dir_okay=folder)
    return click.option("-o", "--output", dest, type=kind, help=help)


def no_nul(_ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A look-up argument the database would refuse: no address, issue or text searched for has a NUL."""
    if "\x00" in value:
        raise click.BadParameter("contains a NUL character, which no address, name or issue has", param=param)
    return value


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one line each on stderr and a named exit code; real bugs keep their traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MailerError as error:
            for line in error.lines():
                click.echo(line, err=True)
            sys.exit(error.exit_status)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailer")
def cli() -> None:
    """Newsletters as code: render YAML issues to email and send them."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option("out_dir", folder=True, help="Output folder (default: build/<issue>/).")
@config_option
@reports_errors
def render(files: tuple[Path, ...], out_dir: Path | None, config_file: Path | None) -> None:
    """Validate issues and write email.html, email.txt and web.html for each."""
    from mailer.compose.build import build
    from mailer.settings import load_settings

    settings = load_settings(config_file)
    for written in build(list(files), settings, out_dir=out_dir):
        click.echo(written.summary())


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--links", is_flag=True, help="Also fetch every link and image of the rendered issues; 1 if one is broken."
)
@config_option
@reports_errors
def check(files: tuple[Path, ...], links: bool, config_file: Path | None) -> None:
    """Validate issue files without writing anything (for pre-commit and CI)."""
    from mailer.compose.build import load_all
    from mailer.settings import load_settings

    settings = load_settings(config_file)
    loaded = load_all(list(files), max_bytes=settings.max_issue_bytes)
    click.echo(f"{plural(len(loaded), 'issue file')} OK")
    if links:
        from mailer.compose.link_check import check_issue_links

        report = check_issue_links(list(files), settings)
        for kind, line in report.lines():
            click.echo(line, err=kind != "note")
        click.echo(report.summary())
        if report.broken:
            sys.exit(ExitStatus.INVALID_INPUT)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the issue format (committed as schema/issue.schema.json)."""
    from mailer.compose.model import issue_json_schema

    click.echo(json.dumps(issue_json_schema(), indent=2, ensure_ascii=False))


@cli.command()
@config_option
@reports_errors
def config(config_file: Path | None) -> None:
    """Show the effective settings and where each came from; secrets are masked."""
    from mailer.config_report import describe_settings

    for line in describe_settings(config_file):
        click.echo(line)


def _database(config_file: Path | None) -> Engine:
    from mailer.settings import load_settings

    return _open_database(load_settings(config_file))


def _open_database(settings: Settings) -> Engine:
    """The configured database, closed when the command ends (in a long-lived process too)."""
    from mailer.audience.database import open_database

    engine = open_database(settings.database_url)
    click.get_current_context().call_on_close(engine.dispose)
    return engine


@cli.group(invoke_without_command=True)
@config_option
@click.pass_context
@reports_errors
def lists(ctx: click.Context, config_file: Path | None) -> None:
    """Show the lists with their subscriber counts (and create them: mailer lists create)."""
    if ctx.invoked_subcommand is not None:
        return
    from mailer.audience.lists import list_summaries

    summaries = list_summaries(_database(config_file))
    if not summaries:
        click.echo("no lists yet; create one with: mailer lists create NAME --description TEXT")
        return
    width = max(4, *(len(s.name) for s in summaries))
    click.echo(f"{'NAME':<{width}}  {'SUBSCRIBED':>10}  {'UNSUBSCRIBED':>12}  {'SUPPRESSED':>10}  DESCRIPTION")
    for s in summaries:
        description = f"{s.description} [public]".strip() if s.public else s.description
        click.echo(
            f"{s.name:<{width}}  {s.subscribed:>10}  {s.unsubscribed:>12}  {s.suppressed:>10}  {description}".rstrip()
        )


@lists.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the list is for (shown on its subscribe page).")
@click.option(
    "--public", is_flag=True, help="Anyone may subscribe on the public web (mailer serve), with double opt-in."
)
@config_option
@reports_errors
def lists_create(name: str, description: str, public: bool, config_file: Path | None) -> None:
    """Create a list."""
    from mailer.audience.lists import create_list

    create_list(_database(config_file), name, description, public=public)
    click.echo(f"created list '{name}'" + (" (public: /subscribe/" + name + ")" if public else ""))


@lists.command("public")
@click.argument("name")
@click.option("--off", is_flag=True, help="Close the list's subscribe page again.")
@config_option
@reports_errors
def lists_public(name: str, off: bool, config_file: Path | None) -> None:
    """Open (or with --off close) a list's subscribe page on the public web."""
    from mailer.audience.lists import set_public

    set_public(_database(config_file), name, not off)
    click.echo(f"list '{name}' is {'private' if off else f'public: /subscribe/{name}'}")


@lists.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also when the list has a send history: delete that history too.")
@config_option
@reports_errors
def lists_delete(name: str, yes: bool, force: bool, config_file: Path | None) -> None:
    """Delete a list and its memberships; subscribers and suppressions stay. Refused once sent to, unless --force."""
    from mailer.audience.list_admin import delete_list, list_contents

    engine = _database(config_file)
    contents = list_contents(engine, name, force=force)
    if not yes:
        if not sys.stdin.isatty():
            raise MailerError(f"not deleting list '{name}' without confirmation; run it at a terminal, or pass --yes")
        click.confirm(contents.question(), abort=True)
    click.echo(delete_list(engine, name, force=force).summary())


@lists.command("rename")
@click.argument("old")
@click.argument("new")
@config_option
@reports_errors
def lists_rename(old: str, new: str, config_file: Path | None) -> None:
    """Rename a list; its send history and unsubscribe links follow it."""
    from mailer.audience.list_admin import rename_list

    public = rename_list(_database(config_file), old, new)
    moved = f" (its subscribe page is now /subscribe/{new})" if public else ""
    click.echo(f"renamed list '{old}' to '{new}'{moved}")


@cli.group()
def subscribers() -> None:
    """Add, remove, import, export, list and look up a list's subscribers."""


@subscribers.command("import")
@click.argument("list_name", metavar="LIST")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@config_option
@reports_errors
def subscribers_import(list_name: str, csv_file: Path, dry_run: bool, config_file: Path | None) -> None:
    """Import subscribers from CSV (a header with an email column; name and any attribute columns)."""
    from mailer.audience.subscriber_csv import import_subscribers
    from mailer.settings import load_settings

    settings = load_settings(config_file)
    report = import_subscribers(
        _open_database(settings), list_name, csv_file, dry_run=dry_run, special_use_domains=settings.special_use_domains
    )
    head, *rest = report.lines()
    click.echo(head)
    for line in rest:
        click.echo(line, err=line.startswith(str(csv_file)))
    if report.invalid:
        sys.exit(ExitStatus.INVALID_INPUT)


@subscribers.command("export")
@click.argument("list_name", metavar="LIST")
@config_option
@reports_errors
def subscribers_export(list_name: str, config_file: Path | None) -> None:
    """Write the list's mailable subscribers as CSV to standard output."""
    from mailer.audience.subscriber_csv import export_subscribers

    export_subscribers(_database(config_file), list_name, sys.stdout)


@subscribers.command("add")
@click.argument("list_name", metavar="LIST")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option(
    "--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="An attribute, e.g. language=fr (repeatable)."
)
@config_option
@reports_errors
def subscribers_add(list_name: str, email: str, name: str, attrs: tuple[str, ...], config_file: Path | None) -> None:
    """Subscribe one address to a list."""
    from mailer.audience.lists import add_subscriber
    from mailer.audience.subscriber_csv import attribute_name
    from mailer.settings import load_settings

    attributes: dict[str, str] = {}
    for attr in attrs:
        key, sep, value = attr.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{attr}' is not KEY=VALUE", param_hint="--attr")
        attributes[attribute_name(key)] = value.strip()
    settings = load_settings(config_file)
    outcome = add_subscriber(
        _open_database(settings),
        list_name,
        email,
        name=name,
        attributes=attributes,
        special_use_domains=settings.special_use_domains,
    )
    click.echo(f"{email.strip()}: {outcome} on '{list_name}'")


@subscribers.command("remove")
@click.argument("list_name", metavar="LIST")
@click.argument("email")
@config_option
@reports_errors
def subscribers_remove(list_name: str, email: str, config_file: Path | None) -> None:
    """Take one address off a list (it may be added again; to stop all mail use mailer unsubscribe)."""
    from mailer.audience.lists import remove_subscriber

    remove_subscriber(_database(config_file), list_name, email)
    click.echo(f"{email.strip()}: removed from '{list_name}'")


@subscribers.command("list")
@click.argument("list_name", metavar="LIST", callback=no_nul)
@click.option(
    "--search", default="", metavar="TEXT", callback=no_nul, help="Only addresses or names containing TEXT (any case)."
)
@click.option("--suppressed", is_flag=True, help="Only the suppressed ones.")
@config_option
@reports_errors
def subscribers_list(list_name: str, search: str, suppressed: bool, config_file: Path | None) -> None:
    """Show everyone on a list: address, name, membership status and suppression, one line each."""
    from mailer.audience.subscriber_admin import subscriber_listing

    for line in subscriber_listing(
        _database(config_file), list_name, search=search, suppressed_only=suppressed
    ).lines():
        click.echo(line)


@subscribers.command("show")
@click.argument("email", callback=no_nul)
@config_option
@reports_errors
def subscribers_show(email: str, config_file: Path | None) -> None:
    """Show one address: its lists, suppression, latest deliveries and delivery events."""
    from mailer.audience.subscriber_admin import subscriber_details

    for line in subscriber_details(_database(config_file), email).lines():
        click.echo(line)


@cli.command()
@click.argument("email")
@click.option(
    "--reason",
    type=click.Choice(["unsubscribed", "bounced", "complaint", "blocked"]),  # database.SUPPRESSION_REASONS
    default="unsubscribed",
    show_default=True,
    help="Why the address is suppressed.",
)
@config_option
@reports_errors
def unsubscribe(email: str, reason: str, config_file: Path | None) -> None:
    """Suppress an address on every list: no send will ever mail it again."""
    from mailer.audience.lists import unsubscribe as suppress

    ended = suppress(_database(config_file), email, reason=reason)
    click.echo(f"{email.strip()}: suppressed ({reason}); unsubscribed from {plural(ended, 'list')}")


@cli.command()
@click.argument("email")
@click.option("--list", "list_name", metavar="LIST", help="Also subscribe the address to this list again.")
@click.option("--reason", default="lifted by hand", show_default=True, help="Why, kept in the delivery events.")
@click.option("--force", is_flag=True, help="Lift a complaint suppression too (they reported a message as spam).")
@config_option
@reports_errors
def resubscribe(email: str, list_name: str | None, reason: str, force: bool, config_file: Path | None) -> None:
    """Lift an address's suppression (logged as a delivery event); with --list, subscribe it there again."""
    from mailer.audience.resubscribe import resubscribe as lift
    from mailer.settings import load_settings

    settings = load_settings(config_file)
    done = lift(
        _open_database(settings),
        email,
        list_name=list_name,
        reason=reason,
        force=force,
        special_use_domains=settings.special_use_domains,
    )
    click.echo(done.line())


@cli.command()
@click.argument("issue_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--list",
    "list_names",
    multiple=True,
    help="A list to send to (repeatable: each person gets one copy, through the first list that has them).",
)
@click.option(
    "--to",
    "test_addresses",
    multiple=True,
    metavar="ADDRESS",
    help="Send one test message to this address, not recorded (repeatable: one message each).",
)
@click.option("--dry-run", is_flag=True, help="Write the .eml files it would send to -o DIR; send nothing.")
@output_option("out_dir", folder=True, help="Folder for --dry-run (default: build/<issue>/eml/).")
@click.option(
    "--force",
    is_flag=True,
    help="Send an issue dated after today now (sending publishes it at once), or despite broken links.",
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Mail people again who already got this issue through another list.",
)
@click.option("--retry-failed", is_flag=True, help="Try again the messages that failed temporarily.")
@click.option("--include-permanent", is_flag=True, help="With --retry-failed: also those refused permanently (5xx).")
@click.option(
    "--retry-uncertain",
    is_flag=True,
    help="Send again the messages that got no reply after the end of data (they may arrive twice).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
@reports_errors
def send(
    issue_file: Path | None,
    list_names: tuple[str, ...],
    test_addresses: tuple[str, ...],
    dry_run: bool,
    out_dir: Path | None,
    force: bool,
    allow_duplicates: bool,
    retry_failed: bool,
    include_permanent: bool,
    retry_uncertain: bool,
    yes: bool,
    config_file: Path | None,
) -> None:
    """Send an issue to lists, exactly once per person; run it again to resume.

    Without ISSUE_FILE: the newest ready issue not yet sent to the list (it asks first).
    """
    from mailer.compose.issues_folder import slug_of
    from mailer.delivery import send as sending
    from mailer.settings import load_settings

    if test_addresses and list_names:
        raise click.UsageError("--to sends test messages outside any list; leave out --list (or --to)")
    if not list_names and not test_addresses:
        raise click.UsageError("name the list with --list (or test addresses with --to)")
    list_only = {
        "--dry-run": dry_run,
        "--force": force,
        "--allow-duplicates": allow_duplicates,
        "--retry-failed": retry_failed,
        "--include-permanent": include_permanent,
        "--retry-uncertain": retry_uncertain,
        "--yes": yes,
    }
    if test_addresses and any(list_only.values()):
        flags = ", ".join(flag for flag, given in list_only.items() if given)
        raise click.UsageError(f"{flags}: for sends to a list; --to sends test messages")
    if len(set(list_names)) != len(list_names):
        raise click.UsageError("a list is named twice with --list")
    settings = load_settings(config_file)
    addresses = _test_addresses(test_addresses, settings)
    if addresses:
        issue_file = issue_file or _newest_issue(settings)
        for address in addresses:
            click.echo(f"{address}: {sending.run(sending.send_test(settings, issue_file, address))}")
        return
    engine = _open_database(settings)
    if issue_file is None:
        issue_file = _choose_issue(
            engine, settings, list_names, force=force, ask=not (yes or dry_run), allow_duplicates=allow_duplicates
        )
    if dry_run:
        folder = out_dir or Path("build") / slug_of(issue_file) / "eml"
        count = sending.run(
            sending.dry_run(engine, settings, issue_file, list_names, folder, allow_duplicates=allow_duplicates)
        )
        click.echo(f"dry run: wrote {plural(count, 'message')} to {folder}/; nothing was sent")
        return
    _warn_about_the_relay(settings)
    from mailer.delivery.smtp import SMTPSetupError

    complete = True

    def finished(summary: SendSummary) -> None:
        nonlocal complete
        assert issue_file is not None
        if sys.stderr.isatty():
            click.echo("", err=True)  # off the progress line
        click.echo(summary.line())
        for line in summary.advice(issue_file):
            click.echo(line, err=True)
        complete = complete and summary.complete

    try:
        sending.run(
            _send_with_progress(
                engine,
                settings,
                issue_file,
                list_names,
                finished,
                force=force,
                retry_failed=retry_failed,
                include_permanent=include_permanent,
                retry_uncertain=retry_uncertain,
                allow_duplicates=allow_duplicates,
            )
        )
    except SMTPSetupError as error:  # the relay refused the session or cannot be reached: rows stay pending
        click.echo(str(error), err=True)
        sys.exit(ExitStatus.DELIVERY_FAILED)
    if not complete:
        sys.exit(ExitStatus.DELIVERY_FAILED)


def _test_addresses(given: tuple[str, ...], settings: Settings) -> list[str]:
    """Each --to checked as an import checks an address: one address each, valid, with a usable domain."""
    from mailer.audience.addresses import InvalidAddress, normalise_email

    addresses: dict[str, str] = {}
    for value in given:
        if "," in value or ";" in value:
            raise click.BadParameter(
                f"{value!r}: one address per --to; repeat it for each: --to a@example.org --to b@example.org",
                param_hint="--to",
            )
        try:
            address, key = normalise_email(value, special_use_domains=settings.special_use_domains)
        except InvalidAddress as error:
            raise click.BadParameter(f"{value!r} is not a valid address: {error}", param_hint="--to") from None
        addresses.setdefault(key, address)  # the same person written twice gets one message
    return list(addresses.values())


def _newest_issue(settings: Settings) -> Path:
    """For test sends without a file: the newest valid issue, drafts included (they are what gets proofread)."""
    from mailer.compose.issues_folder import scan_issues

    found = scan_issues(settings.issues_dir, max_bytes=settings.max_issue_bytes).newest()
    click.echo(f"issue: {found.path} ({found.label})")
    return found.path


def _choose_issue(
    engine: Engine, settings: Settings, list_names: tuple[str, ...], *, force: bool, ask: bool, allow_duplicates: bool
) -> Path:
    """The issue the lists are due (see IssuesScan.next_to_send), confirmed at a terminal."""
    from mailer.compose.issues_folder import scan_issues
    from mailer.delivery.sent_issues import recipients_left, sent_to_list, unfinished_for_list

    scan = scan_issues(settings.issues_dir, max_bytes=settings.max_issue_bytes)
    scan.refuse_to_guess(f"which issue to send to {_names(list_names)}")
    today = dt.date.today()
    picks = {
        name: scan.next_to_send(
            name,
            sent_to_list(engine, name),
            unfinished=unfinished_for_list(engine, name),
            today=today,
            force=force,
        )
        for name in list_names
    }
    found = picks[list_names[0]]
    if any(pick != found for pick in picks.values()):
        which = ", ".join(f"{name}: {pick.slug}" for name, pick in picks.items())
        raise MailerError(f"the lists are not at the same issue ({which}); name the issue file")
    left = recipients_left(engine, found.slug, list_names, allow_duplicates=allow_duplicates)
    resuming = any(found.slug in sent_to_list(engine, name) for name in list_names)
    click.echo(f"issue: {found.path}" + (" (resuming the send that did not finish)" if resuming else ""))
    if ask:
        if not sys.stdin.isatty():
            raise MailerError(f"no issue file named; name it, or pass --yes to send {found.label}")
        count = plural(left, "recipient")
        verb = "Resume sending" if resuming else "Send"
        click.confirm(f"{verb} {found.label} to {_names(list_names)} ({count})?", abort=True)
    return found.path


def _names(list_names: tuple[str, ...]) -> str:
    """staff; staff and partners; staff, partners and press."""
    return " and ".join(", ".join(list_names).rsplit(", ", 1))


def _warn_about_the_relay(settings: Settings) -> None:
    """Unchecked certificates always; an EHLO name relays may refuse, when the relay is not on this machine."""
    from mailer.delivery.smtp import helo_warning, tls_warning
    from mailer.settings import LOCAL_HOSTS

    local = settings.smtp_host.strip("[]").lower() in LOCAL_HOSTS
    for warning in (tls_warning(settings), None if local else helo_warning(settings)):
        if warning:
            click.echo(warning, err=True)


async def _send_with_progress(
    engine: Engine,
    settings: Settings,
    issue_file: Path,
    list_names: tuple[str, ...],
    finished: Callable[[SendSummary], None],
    **options: bool,
) -> list[SendSummary]:
    """A progress bar on a terminal, a line every 10 s otherwise; Ctrl-C finishes the messages in flight.

    Notices (the relay unreachable, waiting for another sender) take the progress line at once.
    """
    import time

    from mailer.delivery.send import send_to_lists

    stop = asyncio.Event()
    started = last = time.monotonic()

    def notice(text: str) -> None:
        if sys.stderr.isatty():
            click.echo(f"\r{text:<60}", err=True, nl=False)
        else:
            click.echo(text, err=True)

    def progress(sent: int, failed: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= (0.5 if sys.stderr.isatty() else 10):
            last = now
            rate = sent / (now - started) if now > started else 0
            left = max(0, total - sent - failed)
            eta = f", about {left / rate:.0f} s left" if rate else ""
            line = f"{sent + failed}/{total}: sent {sent}, failed {failed}, {rate:.0f}/s{eta}"
            click.echo(f"\r{line}" if sys.stderr.isatty() else line, err=True, nl=not sys.stderr.isatty())

    try:
        with _stopped_by_signals(stop):
            return await send_to_lists(
                engine,
                settings,
                issue_file,
                list_names,
                progress=progress,
                notice=notice,
                stop=stop,
                finished=finished,
                **options,
            )
    finally:
        if sys.stderr.isatty():
            click.echo("", err=True)


@contextlib.contextmanager
def _stopped_by_signals(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set `stop`: on the event loop where it can (POSIX), else through signal.signal (Windows)."""
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    try:
        for number in signals:
            loop.add_signal_handler(number, stop.set)
    except NotImplementedError:
        previous = {number: signal.signal(number, lambda *_: loop.call_soon_threadsafe(stop.set)) for number in signals}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return
    try:
        yield
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


@cli.command()
@click.argument("issue_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--list", "list_name", help="Only this list (default: every list the issue went to).")
@config_option
@reports_errors
def status(issue_file: Path, list_name: str | None, config_file: Path | None) -> None:
    """Show sent / pending / failed for an issue, with every failure and uncertain delivery."""
    from mailer.compose.issues_folder import slug_of
    from mailer.delivery.delivery_status import delivery_status, issues_sent_to

    if not issue_file.is_file():
        raise MailerError(f"{issue_file}: no such file")
    engine = _database(config_file)
    names = [list_name] if list_name else issues_sent_to(engine, slug_of(issue_file))
    if not names:
        click.echo(f"{slug_of(issue_file)} has not been sent to any list")
    for name in names:
        for line in delivery_status(engine, slug_of(issue_file), name).lines():
            click.echo(line)


@cli.command()
@click.argument("issue", callback=no_nul)
@click.option("--list", "list_name", help="Only this list (default: every list the issue went to).")
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON, for scripts.")
@config_option
@reports_errors
def report(issue: str, list_name: str | None, as_json: bool, config_file: Path | None) -> None:
    """Show what became of an issue: sent, failed, bounced, complaints, unsubscribes; ISSUE is its file or name."""
    from mailer.compose.issues_folder import slug_of
    from mailer.delivery.report import issue_report

    if issue.endswith((".yaml", ".yml")) and not Path(issue).is_file():
        raise MailerError(f"{issue}: no such file")
    slug = slug_of(Path(issue)) if issue.endswith((".yaml", ".yml")) else issue
    figures = issue_report(_database(config_file), slug, list_name)
    if as_json:
        click.echo(json.dumps(figures.as_json(), indent=2))
        return
    if not (figures.sent or figures.failed or figures.pending or figures.uncertain or figures.skipped):
        raise MailerError(f"{slug} has not been sent" + (f" to '{list_name}'" if list_name else " to any list"))
    for line in figures.table():
        click.echo(line)


@cli.group()
def bounces() -> None:
    """Read bounces and spam complaints from the bounce mailbox."""


@bounces.command("fetch")
@click.option("--watch", is_flag=True, help="Keep reading as bounces arrive (IMAP IDLE where offered); Ctrl-C stops.")
@config_option
@reports_errors
def bounces_fetch(watch: bool, config_file: Path | None) -> None:
    """Read every unhandled message of bounce_mailbox once: suppress hard bounces and complaints, count soft ones.

    Ctrl-C (or a kill) at any moment loses nothing: the message being read is not marked handled, and the next
    fetch reads it again, counting it once.
    """
    from mailer.delivery.bounces import FetchSummary, fetch_bounces
    from mailer.settings import load_settings

    settings = load_settings(config_file)
    engine = _open_database(settings)
    summary = FetchSummary()
    shown = 0

    def progress(summary: FetchSummary) -> None:
        nonlocal shown
        for address, reason in summary.suppressed[shown:]:
            click.echo(f"suppressed ({reason}): {address}")
        shown = len(summary.suppressed)
        for problem in summary.problems:
            click.echo(problem, err=True)
        summary.problems.clear()

    if watch:
        click.echo(
            f"watching {settings.bounce_mailbox} (IMAP IDLE where offered, else every "
            f"{settings.bounce_poll_seconds:g} s); Ctrl-C stops",
            err=True,
        )
    try:
        fetch_bounces(engine, settings, watch=watch, progress=progress, summary=summary)
    except KeyboardInterrupt:
        click.echo(summary.line())
        if watch:
            return
        click.echo("interrupted; run mailer bounces fetch again to read the rest", err=True)
        raise SystemExit(ExitStatus.DELIVERY_FAILED) from None
    click.echo(summary.line())
    if summary.outcomes["left unread"]:
        raise SystemExit(ExitStatus.DELIVERY_FAILED)


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--port", default=8025, show_default=True, help="Port to listen on.")
@host_option
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@config_option
@reports_errors
def preview(files: tuple[Path, ...], port: int, host: str, no_open: bool, config_file: Path | None) -> None:
    """Preview issues in a browser; saving a file updates the page by itself."""
    import webbrowser

    from mailer.compose.issues_folder import scan_issues, slug_of
    from mailer.settings import load_settings
    from mailer.web.preview import serve_preview

    if files:
        paths = list(files)
    else:
        settings = load_settings(config_file)
        folder = settings.issues_dir
        scan = scan_issues(folder, max_bytes=settings.max_issue_bytes)
        paths = [found.path for found in scan.issues] + scan.broken
        if not paths:
            raise MailerError(f"{folder}: no issue files to preview; name one: mailer preview issues/2016-02.yaml")
    for path in paths:
        if not path.is_file():
            raise MailerError(f"{path}: no such file")
    url = f"http://{host}:{port}/" if len(paths) > 1 else f"http://{host}:{port}/issue/{slug_of(paths[0])}/"

    async def run() -> None:
        ready = asyncio.Event()
        server = asyncio.create_task(serve_preview(paths, config_file=config_file, host=host, port=port, ready=ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            waiter.cancel()
            await server
            return
        click.echo(f"previewing at {url} (Ctrl-C to stop)")
        if not no_open:
            webbrowser.open(url)
        await server

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    click.echo("preview stopped")


@cli.command()
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("build/site"),
    show_default=True,
    help="The site's folder (build/ is git-ignored).",
)
@click.option("--strict", is_flag=True, help="Publish nothing, exit 1, if any issue file is broken.")
@issues_option
@config_option
@reports_errors
def publish(out_dir: Path, strict: bool, issues_dir: Path | None, config_file: Path | None) -> None:
    """Write the archive as static files (index, Atom feed, each issue's web version) for any web server.

    Broken issue files are left out with a warning, as mailer serve does; --strict refuses instead.
    """
    from mailer.settings import load_settings
    from mailer.web.archive import publish as publish_site

    settings = load_settings(config_file, **({"issues_dir": issues_dir} if issues_dir else {}))
    scan, written = publish_site(settings.issues_dir, out_dir, settings, sent=_went_out(settings), strict=strict)
    for line in scan.report():
        click.echo(line, err=True)
    for path, size in written:
        click.echo(f"{path}  {size / 1024:.1f} KB")
    click.echo(f"published {plural(len(scan.entries), 'issue')} to {out_dir}/ for {settings.archive_url}")


def _went_out(settings: Settings) -> Callable[[Collection[str]], Collection[str]]:
    """The ledger's answer to "which of these issues went out"; nothing, when there is no database yet."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from mailer.delivery.sent_issues import went_out

    try:
        url = make_url(settings.database_url)
        missing = url.get_backend_name() == "sqlite" and bool(url.database) and not Path(url.database or "").exists()
    except (ArgumentError, ValueError):
        missing = False  # opening it says what is wrong, in one line
    if missing:
        return lambda slugs: ()
    engine = _open_database(settings)
    return lambda slugs: went_out(engine, slugs)


@cli.command()
@host_option
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Behind a reverse proxy: take the client address and scheme from X-Forwarded-For/-Proto.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    help="With --proxy-headers: the proxies trusted to set them (comma-separated, or *).",
)
@issues_option
@config_option
@reports_errors
def serve(
    host: str,
    port: int,
    workers: int,
    proxy_headers: bool,
    forwarded_allow_ips: str,
    issues_dir: Path | None,
    config_file: Path | None,
) -> None:
    """The public web: the archive, "view in browser" pages, unsubscribe and subscribe."""
    import logging
    import os

    import uvicorn

    from mailer.settings import CONFIG_ENV, load_settings
    from mailer.web.preview import check_port_free
    from mailer.web.public_web import check_serve_settings

    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file.resolve())
    if issues_dir is not None:
        os.environ["MAILER_ISSUES_DIR"] = str(issues_dir.resolve())
    settings = load_settings(config_file)
    check_serve_settings(settings)
    _warn_about_the_relay(settings)
    engine = _database(config_file)  # created and migrated now; the workers open their own
    from mailer.delivery.sent_issues import went_out
    from mailer.web.archive import scan_archive

    for line in scan_archive(settings.issues_dir, settings, sent=lambda slugs: went_out(engine, slugs)).report():
        click.echo(line, err=True)
    engine.dispose()
    check_port_free(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    click.echo(f"serving {settings.issues_dir}/ at http://{host}:{port}/ for {settings.archive_url} (Ctrl-C to stop)")
    uvicorn.run(
        "mailer.web.public_web:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        access_log=False,  # request lines carry unsubscribe and confirmation tokens
        log_level="warning",
    )


def _since_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--since is a day (YYYY-MM-DD) or last-issue; anything else is a usage error saying so."""
    import datetime as dt
    import re

    if value == "last-issue":
        return value
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r} is neither a day as YYYY-MM-DD (e.g. 2019-07-01) nor last-issue")


@cli.command()
@click.option("--feed", "source", required=True, metavar="FILE|URL", help="The news feed, RSS 2.0 or Atom.")
@click.option(
    "--since",
    required=True,
    callback=_since_option,
    metavar="YYYY-MM-DD|last-issue",
    help="Items dated on or after this day; last-issue: the date of the newest issue in issues_dir.",
)
@output_option("out_file", folder=False, help="Write the issue file here (default: standard output).")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option(
    "--timeout",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for a feed URL.",
)
@config_option
@reports_errors
def draft(
    source: str, since: str, out_file: Path | None, force: bool, timeout: float, config_file: Path | None
) -> None:
    """Start an issue from the news feed: one news story per item since a day."""
    import datetime as dt

    from mailer.compose.draft import check_writable, draft_issue, last_issue, write_draft
    from mailer.compose.newsfeed import read_feed

    if out_file is not None:
        check_writable(out_file, force=force)
    if since == "last-issue":
        from mailer.settings import load_settings

        last = last_issue(load_settings(config_file).issues_dir)
        for line in last.skipped:
            click.echo(line, err=True)
        click.echo(f"since {last.date.isoformat()}, the date of {last.path}", err=True)
        since = last.date.isoformat()
    result = draft_issue(read_feed(source, timeout=timeout), dt.date.fromisoformat(since), today=dt.date.today())
    for warning in result.warnings:
        click.echo(warning, err=True)
    if out_file is None:
        click.echo(result.text, nl=False)
        return
    write_draft(out_file, result.text, force=force)
    click.echo(
        f"wrote {out_file}: {plural(result.stories, 'news story', 'news stories')}; check it with: mailer check {out_file}"
    )


def main() -> None:
    cli(prog_name="mailer")


if __name__ == "__main__":
    main()
