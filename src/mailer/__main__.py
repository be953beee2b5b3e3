from __future__ import annotations

from mailer.cli import main

main()
