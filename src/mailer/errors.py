"""The project's own errors and the exit codes the CLI turns them into."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitStatus(enum.IntEnum):
    OK = 0
    INVALID_INPUT = 1
    USAGE = 2  # click's own code for unknown flags and missing arguments
    DELIVERY_FAILED = 3


class MailerError(Exception):
    """A problem the user can fix; the CLI prints it as one line per problem, no traceback."""

    exit_status = ExitStatus.INVALID_INPUT

    def lines(self) -> list[str]:
        return [str(self)]


class DeliveryFailed(MailerError):
    """A message could not be delivered, or the relay cannot be used: exit code 3."""

    exit_status = ExitStatus.DELIVERY_FAILED


class UsageError(MailerError):
    """Options that do not go together: exit code 2, like click's own usage errors."""

    exit_status = ExitStatus.USAGE


@dataclass(frozen=True)
class Problem:
    """One problem at one place of one file: `file:line:col: field: message`."""

    path: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class IssueFileError(MailerError):
    """Everything wrong with one issue file, reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class ConfigError(MailerError):
    """The settings or branding configuration cannot be used."""


class RenderError(MailerError):
    """A template or the rendered output is broken; nothing was written."""
