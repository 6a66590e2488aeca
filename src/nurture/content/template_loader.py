"""Where Jinja finds email templates, and which files make up one email.

An email file starts with front matter (subject, key, delay); Jinja sees the file with that block
blanked out, so the line numbers in its errors stay the file's. An email's version is the content
of every file it is made of: itself, what it extends or includes, and its sibling steps (their
subjects appear in it as ``step.next``).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, TemplateError, TemplateSyntaxError, meta

from nurture.content.sequences import NOT_SEQUENCES, LocatedError, strip_front_matter

__all__ = ["FrontMatterLoader", "TemplateSourceError", "template_files"]


class TemplateSourceError(LocatedError):
    """A template whose ``extends``/``include`` cannot be followed (a syntax error, a computed name)."""


class FrontMatterLoader(FileSystemLoader):
    """Jinja sees an email file with its front matter blanked out, line numbers unchanged."""

    def get_source(self, environment, template):  # type: ignore[override]
        source, filename, uptodate = super().get_source(environment, template)
        if source.startswith(("---", "\ufeff---")):
            source = strip_front_matter(source)
        return source, filename, uptodate


def template_files(env: Environment, templates_dir: Path, template: str) -> list[Path]:
    """Files whose content makes up ``template``: itself, what it extends/includes, its sibling steps
    (and their directory, so adding or removing a step changes the version)."""
    names: list[str] = []
    pending = [template]
    while pending:
        name = pending.pop()
        if name in names:
            continue
        names.append(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        except TemplateError:
            continue  # a missing file is reported when the template is built
        try:
            refs = list(meta.find_referenced_templates(env.parse(source, name, filename)))
        except TemplateSyntaxError as exc:
            raise TemplateSourceError(filename, exc.lineno, f"template syntax error: {exc.message}") from exc
        if None in refs:
            raise TemplateSourceError(filename, 0, "template names in extends/include must be fixed strings")
        pending.extend(ref for ref in refs if ref is not None)
    paths = [templates_dir / name for name in names]
    parts = Path(template).parts
    if len(parts) == 2 and parts[0] not in NOT_SEQUENCES:
        directory = templates_dir / parts[0]
        siblings = sorted(p for p in directory.glob("*.html.j2") if p.name != parts[1])
        paths.extend(siblings)
        paths.append(directory)
    return paths
