"""Run `mailer` in process (click's CliRunner), or as a child process where a process matters.

In process a command reads its settings exactly as a real run does (MAILER_* variables, .env and
mailer.toml in the current directory) and exits through the same `reports_errors` wrapper, without
paying the ~1 s start-up of a fresh interpreter for every command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from mailer.cli import cli


def run_cli(*args: str, cwd: Path, env: Mapping[str, str | None] | None = None) -> Result:
    """`mailer ARGS` run in `cwd`, with `env` on top of os.environ (None unsets a variable).

    result.exit_code, result.stdout and result.stderr are what a user sees; a real bug raises here
    with its traceback instead of passing as exit code 1.
    """
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), env=dict(env or {}), prog_name="mailer", catch_exceptions=False)
    finally:
        os.chdir(previous)


def start_mailer(*args: str, cwd: Path, env: Mapping[str, str], **popen: Any) -> subprocess.Popen[str]:
    """`mailer ARGS` as a real child process, for what needs one: signals, kill -9, concurrent senders."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", *args], cwd=cwd, env={**os.environ, **env}, text=True, **popen
    )
