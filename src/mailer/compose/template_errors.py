"""A template mistake (a typo in a name, bad syntax) as one line naming the template file and line."""

from __future__ import annotations

import jinja2

from mailer.errors import RenderError


def render_template(template: jinja2.Template, **context: object) -> str:
    try:
        return template.render(**context)
    except jinja2.TemplateError as error:
        name = getattr(error, "filename", None) or getattr(error, "name", None) or template.name
        line = getattr(error, "lineno", None)
        where = f"{name}:{line}" if line else f"{name}"
        raise RenderError(f"{where}: template error: {error}") from None
