"""Email rendering: Jinja sandbox, CSS inlined once per template version, a cheap per-recipient pass.

Template context
================
This table is the whole contract between the templates and the code; the
studio shows it from :data:`TEMPLATE_CONTEXT`.

======================= ========= ================================================================
name                    scope     what it is
======================= ========= ================================================================
clinic.name             campaign  the clinic's name
clinic.postal_address   campaign  the clinic's postal address (one line)
clinic.phone            campaign  the clinic's phone number, as people dial it
clinic.website_url      campaign  the clinic's website (https)
consultation_url        campaign  where to book a consultation (https)
base_url                campaign  this service's public address (links to /unsubscribe etc.)
step.key                campaign  the email's key from its front matter
step.number             campaign  1-based position in its sequence (1 for newsletter/system)
step.total              campaign  number of steps in its sequence (1 for newsletter/system)
step.subject            campaign  the rendered subject line
step.preheader          campaign  the rendered preheader (inbox preview text)
sequence.name           campaign  the sequence directory name, or "newsletter" / "system"
year                    campaign  the current year (UTC)
first_name              recipient the subscriber's first name, or "there" when we don't have one
unsubscribe_url         recipient one-click unsubscribe link (marketing emails)
preferences_url         recipient link to the subscriber's email preferences (marketing emails)
confirm_url             recipient the double opt-in link (system/confirm only)
======================= ========= ================================================================

Recipient values may only be *output*, as ``{{ first_name }}``: never in
``{% if %}``, never through a filter, never inside ``style``/``class``
attributes or ``<style>``. Anything else raises :class:`RenderError` when the
template is built, so the validator reports it. The renderer cleans every
value to one line without control characters (a name cannot add a line to the
subject), treats an empty value as missing, applies the first-name fallback,
and refuses a ``*_url`` value that is not http(s).

How a render works
==================
premailer (CSS inlining) costs milliseconds an email (about 9 ms for this
layout on the dev machine); Jinja about 20 microseconds. So for each template *version* (content hash of the email file, the
files it extends or includes, its sibling step files, plus the campaign
values) the renderer:

1. renders the template once with a unique marker string in place of each
   recipient value;
2. inlines the CSS once with premailer (``@media`` rules stay in ``<style>``,
   ``!important`` kept so they beat the inline styles on phones);
3. finds every marker in the inlined tree, notes its context (HTML text or
   attribute, URL attribute) and splits the serialized HTML into literal
   segments and slots; the text part (made from the HTML, see
   :mod:`nurture.plaintext`), the subject and the preheader likewise.

Per recipient, :meth:`Renderer.render` escapes each value once for its
context and joins the segments. The output parses to the same tree as Jinja +
premailer run for that one recipient (``tests/unit/test_rendering.py`` checks
that). Each call stats the template's files, so edits are picked up at once
by the studio and a long-running scheduler.
"""

from __future__ import annotations

import hashlib
from html import unescape as html_unescape
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from lxml import etree
from markupsafe import escape

from nurture.plaintext import html_to_text
from nurture.sequences import (
    NOT_SEQUENCES,
    LocatedError,
    Step,
    TemplateFormatError,
    describe_email,
    strip_front_matter,
)

__all__ = [
    "FIRST_NAME_FALLBACK",
    "RECIPIENT_KEYS",
    "TEMPLATE_CONTEXT",
    "ContextVariable",
    "RenderError",
    "Rendered",
    "Renderer",
    "inline_css",
    "sample_recipient",
]

FIRST_NAME_FALLBACK = "there"
RECIPIENT_KEYS = ("first_name", "unsubscribe_url", "preferences_url", "confirm_url")


@dataclass(frozen=True)
class ContextVariable:
    name: str
    scope: str  # "campaign" (same for every recipient) or "recipient"
    description: str


TEMPLATE_CONTEXT: tuple[ContextVariable, ...] = (
    ContextVariable("clinic.name", "campaign", "the clinic's name"),
    ContextVariable("clinic.postal_address", "campaign", "the clinic's postal address (one line)"),
    ContextVariable("clinic.phone", "campaign", "the clinic's phone number, as people dial it"),
    ContextVariable("clinic.website_url", "campaign", "the clinic's website (https)"),
    ContextVariable("consultation_url", "campaign", "where to book a consultation (https)"),
    ContextVariable("base_url", "campaign", "this service's public address"),
    ContextVariable("step.key", "campaign", "the email's key from its front matter"),
    ContextVariable("step.number", "campaign", "1-based position in its sequence (1 for newsletter/system)"),
    ContextVariable("step.total", "campaign", "number of steps in its sequence (1 for newsletter/system)"),
    ContextVariable("step.subject", "campaign", "the rendered subject line"),
    ContextVariable("step.preheader", "campaign", "the rendered preheader (inbox preview text)"),
    ContextVariable("sequence.name", "campaign", 'the sequence directory name, or "newsletter" / "system"'),
    ContextVariable("year", "campaign", "the current year (UTC)"),
    ContextVariable("first_name", "recipient", f'the subscriber\'s first name, or "{FIRST_NAME_FALLBACK}"'),
    ContextVariable("unsubscribe_url", "recipient", "one-click unsubscribe link (marketing emails)"),
    ContextVariable("preferences_url", "recipient", "link to the subscriber's email preferences (marketing emails)"),
    ContextVariable("confirm_url", "recipient", "the double opt-in link (system/confirm only)"),
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    preheader: str


class RenderError(LocatedError):
    """A template that cannot be rendered; str() is ``path:line: message``."""


def sample_recipient(base_url: str) -> dict[str, str]:
    """A made-up recipient for previews, the studio and the validator."""
    base = base_url.rstrip("/")
    return {
        "first_name": "Alex",
        "unsubscribe_url": f"{base}/unsubscribe/sample-token",
        "preferences_url": f"{base}/preferences/sample-token",
        "confirm_url": f"{base}/confirm/sample-token",
    }


# --------------------------------------------------------------------------- CSS inlining

def _quiet_cssutils() -> None:
    # cssutils logs every vendor property (mso-*, -webkit-*) to stderr through its own handler.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)


def inline_css(html: str) -> str:
    """premailer with this project's settings: never the network, @media rules kept and winning."""
    from premailer import Premailer  # imported lazily: premailer pulls in requests and cssutils

    _quiet_cssutils()
    return Premailer(
        html,
        base_url=None,
        disable_link_rewrites=True,
        allow_network=False,
        allow_loading_external_files=False,
        disable_validation=True,  # vendor properties such as mso-hide are not "valid" CSS
        keep_style_tags=False,  # keep only what cannot be inlined: @media and :hover rules
        strip_important=False,  # premailer marks @media rules !important; they must beat inline styles
        exclude_pseudoclasses=True,
        remove_classes=False,  # @media rules select by class
        cssutils_logging_level=logging.CRITICAL,
    ).transform(pretty_print=False)


# --------------------------------------------------------------------------- recipient values

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _clean(value: Any) -> str:
    """One line, no control characters: what a name or URL may hold in any part of an email."""
    return " ".join(_CONTROL.sub(" ", str(value)).split())


def _prepare(recipient: Mapping[str, Any]) -> dict[str, str]:
    """Cleaned recipient values; an empty value counts as missing (an empty URL is a bug upstream)."""
    values = {}
    for key in RECIPIENT_KEYS:
        raw = recipient.get(key)
        value = _clean(raw) if raw is not None else ""
        if value:
            if key.endswith("_url") and not value.lower().startswith(("https://", "http://")):
                raise ValueError(f"{key} must be an http(s) URL, got {value[:40]!r}")
            values[key] = value
    values.setdefault("first_name", FIRST_NAME_FALLBACK)
    return values


class _Marker(str):
    """A recipient value's stand-in while a template version is built; refuses to be tested."""

    def _refuse(self, *_: Any) -> bool:
        raise TypeError(
            "a recipient value (first_name, unsubscribe_url, preferences_url, confirm_url) may only be output "
            "as {{ name }}: not used in {% if %}, comparisons or tests"
        )

    __bool__ = _refuse
    __eq__ = _refuse  # type: ignore[assignment]
    __ne__ = _refuse  # type: ignore[assignment]
    __hash__ = str.__hash__


# --------------------------------------------------------------------------- templates

class _FrontMatterLoader(FileSystemLoader):
    """Jinja sees an email file with its front matter blanked out, line numbers unchanged."""

    def get_source(self, environment, template):  # type: ignore[override]
        source, filename, uptodate = super().get_source(environment, template)
        if source.startswith(("---", "\ufeff---")):
            source = strip_front_matter(source)
        return source, filename, uptodate


def _template_line(exc: BaseException, templates_dir: Path) -> tuple[Path, int] | None:
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


@dataclass(frozen=True)
class _Segments:
    """A rendered string cut at the recipient values: parts[i] for i in slots is filled per recipient."""

    parts: tuple[str, ...]
    slots: tuple[tuple[int, Any], ...]  # (index into parts, slot spec)

    def fill(self, value_for: Callable[[Any], str]) -> str:
        if not self.slots:
            return self.parts[0]
        out = list(self.parts)
        for index, spec in self.slots:
            out[index] = value_for(spec)
        return "".join(out)


@dataclass(frozen=True)
class _Compiled:
    subject: _Segments
    preheader: _Segments
    html: _Segments
    text: _Segments
    keys: frozenset[str]  # recipient values this template uses


@dataclass
class _Entry:
    stamps: tuple[tuple[str, tuple[int, int, int]], ...]
    fingerprint: str
    year: int
    compiled: _Compiled
    checked: float = 0.0  # time.monotonic() of the last look at the files


# Looking at the template files costs a few stat() calls: by default do it at most once a second
# per template, so a long run picks up marketing's edits within a second without paying per email.
RECHECK_SECONDS = 1.0


def _stamp(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (-1, -1, -1)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Renderer:
    """Renders emails from ``templates_dir``; safe to share between threads.

    ``clinic`` is a mapping or an object with ``name``, ``postal_address``,
    ``phone``, ``website_url`` (and optionally ``consultation_url``).
    """

    def __init__(
        self,
        templates_dir: Path,
        *,
        clinic: Mapping[str, Any] | Any,
        base_url: str,
        consultation_url: str | None = None,
        year: int | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        _quiet_cssutils()
        self.templates_dir = Path(templates_dir)
        self.base_url = base_url.rstrip("/")
        self.clinic = {
            name: _clinic_value(clinic, name, "") for name in ("name", "postal_address", "phone", "website_url")
        }
        self.consultation_url = (
            consultation_url
            or _clinic_value(clinic, "consultation_url", None)
            or f"{self.clinic['website_url'].rstrip('/') or self.base_url}/consultation"
        )
        self._year = year
        self._recheck_seconds = recheck_seconds
        self.env = SandboxedEnvironment(
            loader=_FrontMatterLoader(str(self.templates_dir)),
            autoescape=True,
            undefined=StrictUndefined,
            auto_reload=True,
        )
        self._line_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
        self._token = secrets.token_hex(6)
        self._marker_re = re.compile(rf"nrtr{self._token}([a-z])(\d+)x")
        self._cache: dict[str, _Entry] = {}
        self._versions: dict[str, _Compiled] = {}  # fingerprint -> compiled, so touching a file costs no rebuild
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def sample_recipient(self) -> dict[str, str]:
        """A made-up recipient (first name "Alex", URLs under base_url) for previews."""
        return sample_recipient(self.base_url)

    def render(self, template: str, recipient: Mapping[str, Any]) -> Rendered:
        """Subject, inlined HTML, text and preheader of ``template`` for one recipient."""
        compiled = self._compiled(template)
        values = _prepare(recipient)
        missing = compiled.keys - values.keys()
        if missing:
            raise RenderError(self.templates_dir / template, 0, f"the recipient has no {', '.join(sorted(missing))}")
        escaped: dict[Any, str] = {}

        def html_value(spec: Any) -> str:
            out = escaped.get(spec)
            if out is None:
                out = escaped[spec] = _escape_for(spec, values[spec[0]])
            return out

        def text_value(spec: Any) -> str:
            if spec[1] == "rule":  # a heading underline as long as the heading with its values in
                _, _, char, static, keys = spec
                return char * (static + sum(len(values[k]) for k in keys))
            return values[spec[0]]

        return Rendered(
            subject=compiled.subject.fill(text_value),
            html=compiled.html.fill(html_value),
            text=compiled.text.fill(text_value),
            preheader=compiled.preheader.fill(text_value),
        )

    def render_reference(self, template: str, recipient: Mapping[str, Any]) -> Rendered:
        """Jinja + premailer for this one recipient: the slow path :meth:`render` must match."""
        step, total = self._describe(template)
        values = _prepare(recipient)
        context = self._context(step, total, values)
        html = self._render_html(template, context)
        return Rendered(
            subject=context["step"]["subject"],
            html=inline_css(html),
            text=html_to_text(html),
            preheader=context["step"]["preheader"],
        )

    def render_jinja(self, template: str, recipient: Mapping[str, Any]) -> str:
        """Only the Jinja part (no CSS inlining, no text), e.g. for a quick preview."""
        return self._render_html(template, self.context(template, recipient))

    def context(self, template: str, recipient: Mapping[str, Any]) -> dict[str, Any]:
        """The Jinja context ``template`` sees for this recipient (values cleaned, fallback applied)."""
        step, total = self._describe(template)
        return self._context(step, total, _prepare(recipient))

    def dependencies(self, template: str) -> list[Path]:
        """Files whose content makes up ``template``: itself, what it extends/includes, its sibling steps."""
        names: list[str] = []
        pending = [template]
        while pending:
            name = pending.pop()
            if name in names:
                continue
            names.append(name)
            try:
                source, filename, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            except TemplateError:
                continue  # a missing file is reported when the template is built
            try:
                refs = list(meta.find_referenced_templates(self.env.parse(source, name, filename)))
            except TemplateSyntaxError as exc:
                raise RenderError(filename, exc.lineno, f"template syntax error: {exc.message}") from exc
            if None in refs:
                raise RenderError(filename, 0, "template names in extends/include must be fixed strings")
            pending.extend(ref for ref in refs if ref is not None)
        paths = [self.templates_dir / name for name in names]
        parts = Path(template).parts
        if len(parts) == 2 and parts[0] not in NOT_SEQUENCES:
            directory = self.templates_dir / parts[0]
            siblings = sorted(p for p in directory.glob("*.html.j2") if p.name != parts[1])
            paths.extend(siblings)
            paths.append(directory)
        return paths

    # ------------------------------------------------------------------ cache

    def _current_year(self) -> int:
        return self._year if self._year is not None else datetime.now(timezone.utc).year

    def _compiled(self, template: str) -> _Compiled:
        entry = self._cache.get(template)
        year = self._current_year()
        if entry is not None and entry.year == year:
            now = time.monotonic()
            if now - entry.checked < self._recheck_seconds:
                return entry.compiled
            if all(_stamp(p) == s for p, s in entry.stamps):
                entry.checked = now
                return entry.compiled
        with self._lock:
            paths = self.dependencies(template)
            stamps = tuple((str(p), _stamp(str(p))) for p in paths)
            digest = hashlib.sha256()
            digest.update(json.dumps([template, self._campaign(), year], sort_keys=True).encode())
            for path in paths:
                digest.update(str(path.relative_to(self.templates_dir)).encode() + b"\0")
                if path.is_file():
                    digest.update(path.read_bytes())
                elif path.is_dir():
                    digest.update("\0".join(sorted(p.name for p in path.iterdir())).encode())
                digest.update(b"\0")
            fingerprint = digest.hexdigest()
            compiled = self._versions.get(fingerprint)
            if compiled is None:
                if self.env.cache is not None:  # Jinja's own cache goes by mtime; we go by content
                    self.env.cache.clear()
                compiled = self._build(template, year)
                if len(self._versions) > 256:
                    self._versions.clear()
                self._versions[fingerprint] = compiled
            self._cache[template] = _Entry(stamps, fingerprint, year, compiled, time.monotonic())
            return compiled

    # ------------------------------------------------------------------ building

    def _campaign(self) -> dict[str, Any]:
        return {"clinic": self.clinic, "consultation_url": self.consultation_url, "base_url": self.base_url}

    def _describe(self, template: str) -> tuple[Step, int]:
        try:
            return describe_email(self.templates_dir, template)
        except FileNotFoundError as exc:
            raise RenderError(self.templates_dir / template, 0, "no such template") from exc
        except TemplateFormatError as exc:
            raise RenderError(exc.path, exc.line, exc.message) from exc

    def _line(self, step: Step, field: str, source: str, context: dict[str, Any]) -> str:
        try:
            rendered = self._line_env.from_string(source).render(context)
        except (TemplateError, TypeError) as exc:
            raise RenderError(self.templates_dir / step.template, _front_line(self.templates_dir / step.template, field), f"{field}: {exc}") from exc
        return " ".join(rendered.split())

    def _context(self, step: Step, total: int, values: Mapping[str, str]) -> dict[str, Any]:
        context: dict[str, Any] = {
            **self._campaign(),
            "sequence": {"name": step.sequence or "system"},
            "year": self._current_year(),
            **values,
        }
        step_info = {"key": step.key, "number": step.position + 1, "total": total}
        context["step"] = step_info
        step_info["subject"] = self._line(step, "subject", step.subject, context)
        step_info["preheader"] = self._line(step, "preheader", step.preheader, context)
        return context

    def _render_html(self, template: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(template).render(context)
        except Exception as exc:  # noqa: BLE001 - any mistake in a template ({{ 1/0 }}) is the editor's to fix
            if isinstance(exc, RenderError):
                raise
            where = _template_line(exc, self.templates_dir) or (self.templates_dir / template, 0)
            if isinstance(exc, TemplateError) and exc.message:
                message = exc.message
            else:
                message = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TemplateSyntaxError):
                message = f"template syntax error: {message}"
            raise RenderError(where[0], where[1], message) from exc

    def _marker(self, kind: str, number: int) -> str:
        return f"nrtr{self._token}{kind}{number}x"

    def _build(self, template: str, year: int) -> _Compiled:
        step, total = self._describe(template)
        markers = {key: _Marker(self._marker("v", i)) for i, key in enumerate(RECIPIENT_KEYS)}
        context = self._context(step, total, markers)
        html = self._render_html(template, context)
        for name, value in (("subject", context["step"]["subject"]), ("preheader", context["step"]["preheader"]), ("body", html)):
            self._check_markers_intact(template, name, value)
        inlined = inline_css(html)
        html_segments, keys = self._split_html(template, inlined)
        text = html_to_text(html)
        return _Compiled(
            subject=self._split_line(context["step"]["subject"]),
            preheader=self._split_line(context["step"]["preheader"]),
            html=html_segments,
            text=self._split_text(text),
            keys=frozenset(keys),
        )

    def _check_markers_intact(self, template: str, where: str, rendered: str) -> None:
        # A filter (|upper, |truncate...) on a recipient value changes its marker: refuse.
        prefix = f"nrtr{self._token}"
        for match in re.finditer(re.escape(prefix[:8]), rendered, re.IGNORECASE):
            if not self._marker_re.match(rendered, match.start()):
                raise RenderError(
                    self.templates_dir / template,
                    0,
                    f"a recipient value is changed by a filter in the {where}; output it as {{{{ name }}}} only",
                )

    def _key_of(self, number: str) -> str:
        return RECIPIENT_KEYS[int(number)]

    def _split_line(self, text: str) -> _Segments:
        return self._split(text, lambda kind, number: (self._key_of(number), "text"))

    def _split(self, text: str, spec_for: Callable[[str, str], Any]) -> _Segments:
        parts: list[str] = []
        slots: list[tuple[int, Any]] = []
        position = 0
        for match in self._marker_re.finditer(text):
            parts.append(text[position : match.start()])
            slots.append((len(parts), spec_for(match.group(1), match.group(2))))
            parts.append("")
            position = match.end()
        parts.append(text[position:])
        return _Segments(tuple(parts), tuple(slots))

    def _split_text(self, text: str) -> _Segments:
        # A heading underline must be as long as the heading once the values are in.
        rules: list[tuple[str, str, str, int, tuple[str, ...]]] = []
        lines = text.split("\n")
        for i in range(1, len(lines)):
            line, above = lines[i], lines[i - 1]
            if line and line[0] in "=-" and line == line[0] * len(above) and self._marker_re.search(above):
                keys = tuple(self._key_of(m.group(2)) for m in self._marker_re.finditer(above))
                rules.append(("", "rule", line[0], len(self._marker_re.sub("", above)), keys))
                lines[i] = self._marker("r", len(rules) - 1)
        return self._split(
            "\n".join(lines),
            lambda kind, number: rules[int(number)] if kind == "r" else (self._key_of(number), "text"),
        )

    def _split_html(self, template: str, html: str) -> tuple[_Segments, set[str]]:
        """Give each marker in the inlined HTML a slot that knows how to escape its value."""
        parser = etree.HTMLParser()
        tree = etree.fromstring(html, parser).getroottree()
        specs: list[tuple[str, str, str, str]] = []
        keys: set[str] = set()
        path = self.templates_dir / template

        def retag(text: str, spec_of: Callable[[str], tuple[str, str, str, str]]) -> str:
            def one(match: re.Match[str]) -> str:
                key = self._key_of(match.group(2))
                keys.add(key)
                specs.append(spec_of(key))
                return self._marker("s", len(specs) - 1)

            return self._marker_re.sub(one, text)

        for el in tree.getroot().iter():
            if not isinstance(el.tag, str):  # comment or processing instruction
                if el.text and self._marker_re.search(el.text):
                    raise RenderError(path, 0, "a recipient value inside an HTML comment")
                if el.tail:
                    el.tail = retag(el.tail, lambda key: (key, "html", "", ""))
                continue
            tag = el.tag.lower()
            for name, value in el.attrib.items():
                if self._marker_re.search(name):
                    raise RenderError(path, 0, "a recipient value used as an attribute name")
                if not self._marker_re.search(value):
                    continue
                lower = name.lower()
                if lower in ("style", "class", "id") or lower.startswith("on"):
                    raise RenderError(path, 0, f"a recipient value inside the {name!r} attribute of <{tag}>")
                kind = "uri" if _is_uri_attribute(tag, lower) else "html"
                el.set(name, retag(value, lambda key, kind=kind, tag=tag, name=name: (key, kind, tag, name)))
            if el.text and self._marker_re.search(el.text):
                if tag in ("style", "script"):
                    raise RenderError(path, 0, f"a recipient value inside <{tag}>")
                el.text = retag(el.text, lambda key: (key, "html", "", ""))
            if el.tail:
                el.tail = retag(el.tail, lambda key: (key, "html", "", ""))
        if self._marker_re.search(tree.getroot().tag):  # pragma: no cover - lxml drops such tags
            raise RenderError(path, 0, "a recipient value used as a tag name")
        doctype = html.lstrip().startswith(tree.docinfo.doctype) if tree.docinfo.doctype else False
        out = etree.tostring(tree if doctype else tree.getroot(), method="html", encoding="utf-8").decode("utf-8")
        leftover = [m for m in self._marker_re.finditer(out) if m.group(1) != "s"]
        if leftover:  # pragma: no cover - every marker position is handled above
            raise RenderError(path, 0, "a recipient value in a place the renderer cannot handle")
        return self._split(out, lambda kind, number: specs[int(number)]), keys


def _clinic_value(clinic: Any, name: str, default: Any) -> Any:
    if isinstance(clinic, Mapping):
        value = clinic.get(name, default)
    else:
        value = getattr(clinic, name, default)
    return default if value is None else str(value)


def _front_line(path: Path, field: str) -> int:
    from nurture.sequences import parse_front_matter

    try:
        return parse_front_matter(path.read_text(encoding="utf-8"), path).lines.get(field, 1)
    except (OSError, TemplateFormatError):
        return 1


# --------------------------------------------------------------------------- escaping

_URI_ATTRIBUTES: dict[tuple[str, str], bool] = {}
_ATTRIBUTE_VALUE = re.compile(r"=([\"'])(.*)\1>", re.S)
_PLAIN_URL = re.compile(r"[!#-~]*")  # printable ASCII, no space: libxml2 writes it as is (bar HTML escapes)


def _is_uri_attribute(tag: str, name: str) -> bool:
    """Does libxml2 %-escape this attribute when it serializes HTML (href, src, action, a@name...)?"""
    known = _URI_ATTRIBUTES.get((tag, name))
    if known is None:
        el = etree.Element(tag, {name: "a b\u00e9"})
        known = _URI_ATTRIBUTES[(tag, name)] = "%20" in etree.tostring(el, method="html").decode("ascii")
    return known


def _escape_for(spec: tuple[str, str, str, str], value: str) -> str:
    _key, kind, tag, name = spec
    if kind == "html" or _PLAIN_URL.fullmatch(value):
        return str(escape(value))
    # A URL with spaces, quotes or non-ASCII: libxml2 %-escapes some of it when it writes the slow
    # path's HTML. Let it write this value, read back what it wrote, and escape that for our quotes.
    out = etree.tostring(etree.Element(tag, {name: value}), method="html", encoding="unicode")
    written = _ATTRIBUTE_VALUE.search(out)
    if written is None:  # pragma: no cover - lxml always quotes a non-empty value
        return str(escape(value))
    return str(escape(html_unescape(written.group(2))))
