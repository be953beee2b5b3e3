"""A template mistake (a typo in a name, bad syntax, a missing file) as one line naming the template file and line."""

from __future__ import annotations

import jinja2

from mailer.errors import RenderError


def render_template(env: jinja2.Environment, name: str, **context: object) -> str:
    """Look the template up and render it; any template error, at either step, becomes one RenderError line."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as error:
        raise RenderError(f"{_folder(env)}: no template {error.name!r} (wanted by {name})") from None
    except jinja2.TemplateError as error:
        where = getattr(error, "filename", None) or getattr(error, "name", None) or name
        line = getattr(error, "lineno", None)
        raise RenderError(
            f"{where}:{line}: template error: {error}" if line else f"{where}: template error: {error}"
        ) from None


def _folder(env: jinja2.Environment) -> str:
    loader = env.loader
    return (
        ", ".join(str(path) for path in loader.searchpath)
        if isinstance(loader, jinja2.FileSystemLoader)
        else "templates"
    )
