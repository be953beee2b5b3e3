"""mailer: newsletters as code, from YAML to inline-styled email and SMTP."""

from __future__ import annotations

__version__ = "0.1.0"
