"""Reading a file the user named: one line per failure, and a size limit checked before any parsing."""

from __future__ import annotations

import os
from pathlib import Path

from mailer.errors import MailerError


def read_input(path: Path, *, what: str, max_bytes: int | None = None, setting: str | None = None) -> bytes:
    """The file's bytes; `what` names the kind of file in messages ("an issue file", "a feed").

    Reads at most `max_bytes` + 1 bytes; `setting` names the setting that raises the limit, if one does.
    """
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = file.read() if max_bytes is None else file.read(max_bytes + 1)
    except FileNotFoundError:
        raise MailerError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MailerError(f"{path}: is a directory, not {what}") from None
    except OSError as error:
        raise MailerError(f"{path}: cannot read: {error.strerror}") from None
    if max_bytes is not None and len(data) > max_bytes:
        if setting is None:
            raise MailerError(f"{path}: larger than {max_bytes // 2**20} MB; that is not {what}")
        raise MailerError(
            f"{path}: {max(size, len(data)):,} bytes, more than {setting} ({max_bytes:,}); "
            f"that is not {what}, or raise {setting} if it is"
        )
    return data
