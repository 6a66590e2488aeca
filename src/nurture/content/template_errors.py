"""Where in a template file a rendering mistake is, so an editor is told ``path:line: message``.

Jinja compiles templates to Python whose code objects carry the template's file name and line, so
the innermost traceback frame under the templates directory is the line to blame.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateError, TemplateSyntaxError

from nurture.content.sequences import TemplateFormatError, parse_front_matter

__all__ = ["error_message", "front_matter_line", "template_line"]


def template_line(exc: BaseException, templates_dir: Path) -> tuple[Path, int] | None:
    """The innermost template file and line in a Jinja traceback (Jinja rewrites frames to template lines)."""
    if isinstance(exc, TemplateSyntaxError) and exc.filename and exc.lineno:
        return Path(exc.filename), exc.lineno
    found = None
    tb = exc.__traceback__
    root = str(templates_dir.resolve())
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root) or filename.startswith(str(templates_dir)):
            found = (Path(filename), tb.tb_lineno)
        tb = tb.tb_next
    return found


def error_message(exc: Exception) -> str:
    """What went wrong, in Jinja's words when it has them, else the exception's type and text."""
    if isinstance(exc, TemplateError) and exc.message:
        message = exc.message
    else:
        message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        message = f"template syntax error: {message}"
    return message


def front_matter_line(path: Path, field: str) -> int:
    """The line of ``field`` (subject, preheader) in ``path``'s front matter; 1 when it cannot be read."""
    try:
        return parse_front_matter(path.read_text(encoding="utf-8"), path).lines.get(field, 1)
    except (OSError, TemplateFormatError):
        return 1
