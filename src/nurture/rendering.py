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
clinic.cost             campaign  what the consultation and treatment cost, in the clinic's words
clinic.insurance        campaign  what insurance covers, in the clinic's words
clinic.consultation_format campaign "in-person", "telehealth" or "either"
clinic.esketamine_certified campaign true when the clinic is a certified esketamine (Spravato REMS) treatment center
consultation_url        campaign  where to book a consultation (https)
base_url                campaign  this service's public address (links to /unsubscribe etc.)
step.key                campaign  the email's key from its front matter
step.number             campaign  1-based position in its sequence (1 for newsletter/system)
step.total              campaign  number of steps in its sequence (1 for newsletter/system)
step.subject            campaign  the rendered subject line
step.preheader          campaign  the rendered preheader (inbox preview text)
step.next               campaign  the next step of the sequence, or none (last step, newsletter, system)
step.next.subject       campaign  its rendered subject (also .preheader, .key, .number)
step.next.days          campaign  days between this step and the next (their delay_days apart)
step.next.when          campaign  the same in words: "tomorrow", "in two days", "in a week"
sequence.name           campaign  the sequence directory name, or "newsletter" / "system"
year                    campaign  the current year (UTC)
first_name              recipient the subscriber's first name, or "there" when we don't have one
unsubscribe_url         recipient one-click unsubscribe link (marketing emails)
preferences_url         recipient link to the subscriber's email preferences (marketing emails)
confirm_url             recipient the double opt-in link (system/confirm only)
======================= ========= ================================================================

Filter ``words``: a small whole number in words (``{{ step.total|words }}`` gives "four"), so a
count in the text follows the sequence when a step is added; 21 and over stay digits.

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
   :mod:`nurture.plaintext`), the subject and the preheader likewise
   (markers, splitting and escaping: :mod:`nurture.recipient_slots`).

Per recipient, :meth:`Renderer.render` escapes each value once for its
context and joins the segments. The output parses to the same tree as Jinja +
premailer run for that one recipient (``tests/unit/test_rendering.py`` checks
that). Each call stats the template's files, so edits are picked up at once
by the studio and a long-running scheduler.
"""

from __future__ import annotations

from functools import lru_cache

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from nurture.config import DEFAULT_COST_TEXT, DEFAULT_INSURANCE_TEXT
from nurture.plaintext import html_to_text
from nurture.recipient_slots import RecipientSlots, Segments, SlotError, fillers
from nurture.sequences import (
    NOT_SEQUENCES,
    LocatedError,
    Place,
    Step,
    TemplateFormatError,
    place_email,
    strip_front_matter,
)

__all__ = [
    "FIRST_NAME_FALLBACK",
    "NUMBER_WORDS",
    "RECIPIENT_KEYS",
    "TEMPLATE_CONTEXT",
    "ContextVariable",
    "RenderError",
    "Rendered",
    "Renderer",
    "inline_css",
    "number_words",
    "sample_recipient",
    "when_phrase",
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
    ContextVariable("clinic.cost", "campaign", "what the consultation and treatment cost, in the clinic's words"),
    ContextVariable("clinic.insurance", "campaign", "what insurance covers, in the clinic's words"),
    ContextVariable("clinic.consultation_format", "campaign", '"in-person", "telehealth" or "either"'),
    ContextVariable("clinic.esketamine_certified", "campaign", "true when the clinic is a certified esketamine (Spravato REMS) treatment center"),
    ContextVariable("consultation_url", "campaign", "where to book a consultation (https)"),
    ContextVariable("base_url", "campaign", "this service's public address"),
    ContextVariable("step.key", "campaign", "the email's key from its front matter"),
    ContextVariable("step.number", "campaign", "1-based position in its sequence (1 for newsletter/system)"),
    ContextVariable("step.total", "campaign", "number of steps in its sequence (1 for newsletter/system)"),
    ContextVariable("step.subject", "campaign", "the rendered subject line"),
    ContextVariable("step.preheader", "campaign", "the rendered preheader (inbox preview text)"),
    ContextVariable("step.next", "campaign", "the next step of the sequence, or none (last step, newsletter, system)"),
    ContextVariable("step.next.subject", "campaign", "its rendered subject (also .preheader, .key, .number)"),
    ContextVariable("step.next.days", "campaign", "days between this step and the next (their delay_days apart)"),
    ContextVariable("step.next.when", "campaign", 'the same in words: "tomorrow", "in two days", "in a week"'),
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
        # As Links.preferences builds it: the preferences page takes the unsubscribe token.
        "preferences_url": f"{base}/preferences/sample-token",
        "confirm_url": f"{base}/confirm/sample-token",
    }


# --------------------------------------------------------------------------- counts in words

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)


def number_words(value: Any) -> str:
    """The ``words`` filter: 4 -> "four"; numbers past twenty (and anything else) as they are."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(NUMBER_WORDS):
        return NUMBER_WORDS[value]
    return str(value)


def when_phrase(days: int) -> str:
    """How far off the next step is, as a sentence says it (it goes at the send hour of that day)."""
    if days <= 0:
        return "soon"  # two steps on one day: the second waits for the next day with room
    if days == 1:
        return "tomorrow"
    if days % 7 == 0:
        weeks = days // 7
        return "in a week" if weeks == 1 else f"in {number_words(weeks)} weeks"
    return f"in {number_words(days)} days"


# --------------------------------------------------------------------------- CSS inlining

def _quiet_cssutils() -> None:
    # cssutils logs every vendor property (mso-*, -webkit-*) to stderr through its own handler.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)


@lru_cache(maxsize=32)
def inline_css(html: str) -> str:
    """premailer with this project's settings: never the network, @media rules kept and winning.

    Cached by the HTML itself (premailer is a pure function of it, and slow: a quarter of a second
    an email): a renderer made afresh, as `templates validate` and the studio make one for every
    check, inlines again only the emails whose HTML changed."""
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
class _Compiled:
    subject: Segments
    preheader: Segments
    html: Segments
    text: Segments
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
    ``phone``, ``website_url`` (and optionally ``consultation_url``, ``cost``,
    ``insurance``, ``consultation_format``, ``esketamine_certified``; see
    :class:`nurture.config.Settings` for what they mean and their defaults).
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
        self.clinic = _clinic_context(clinic)
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
        for env in (self.env, self._line_env):
            env.filters["words"] = number_words
        self._slots = RecipientSlots(RECIPIENT_KEYS)
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
        text_value, html_value = fillers(values)
        return Rendered(
            subject=compiled.subject.fill(text_value),
            html=compiled.html.fill(html_value),
            text=compiled.text.fill(text_value),
            preheader=compiled.preheader.fill(text_value),
        )

    def render_reference(self, template: str, recipient: Mapping[str, Any]) -> Rendered:
        """Jinja + premailer for this one recipient: the slow path :meth:`render` must match."""
        values = _prepare(recipient)
        context = self._context(self._describe(template), values)
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

    def render_block(self, template: str, block: str, recipient: Mapping[str, Any]) -> str | None:
        """The Jinja HTML of one block as this email fills it (its own override, else the layout's),
        or None when no template in its chain has that block. For the validator: the footer's
        required lines must be in the footer, not anywhere in the email."""
        try:
            jinja_template = self.env.get_template(template)
            context = jinja_template.new_context(self.context(template, recipient))
            for _ in jinja_template.root_render_func(context):
                pass  # running {% extends %} registers the layout's blocks after the email's own
            functions = context.blocks.get(block)
            return "".join(functions[0](context)) if functions else None
        except RenderError:
            raise
        except Exception as exc:  # noqa: BLE001 - the same mistakes render() reports, said the same way
            raise self._render_error(exc, template) from exc

    def context(self, template: str, recipient: Mapping[str, Any]) -> dict[str, Any]:
        """The Jinja context ``template`` sees for this recipient (values cleaned, fallback applied)."""
        return self._context(self._describe(template), _prepare(recipient))

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

    def _describe(self, template: str) -> Place:
        try:
            return place_email(self.templates_dir, template)
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

    def _context(self, place: Place, values: Mapping[str, str]) -> dict[str, Any]:
        step = place.step
        context: dict[str, Any] = {
            **self._campaign(),
            "sequence": {"name": step.sequence or "system"},
            "year": self._current_year(),
            **values,
        }
        context["step"] = self._step_lines(step, place.total, context)
        context["step"]["next"] = self._next(place, context)
        return context

    def _step_lines(self, step: Step, total: int, context: dict[str, Any]) -> dict[str, Any]:
        """``step`` as templates see it; its subject and preheader may use its own number and total."""
        info: dict[str, Any] = {"key": step.key, "number": step.position + 1, "total": total}
        own = {**context, "step": info}
        info["subject"] = self._line(step, "subject", step.subject, own)
        info["preheader"] = self._line(step, "preheader", step.preheader, own)
        return info

    def _next(self, place: Place, context: dict[str, Any]) -> dict[str, Any] | None:
        """``step.next``: so "what comes next" in an email follows the sequence when steps change."""
        if place.next is None:
            return None
        days = place.next.delay_days - place.step.delay_days
        return {**self._step_lines(place.next, place.total, context), "days": days, "when": when_phrase(days)}

    def _render_html(self, template: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(template).render(context)
        except RenderError:
            raise
        except Exception as exc:  # noqa: BLE001 - any mistake in a template ({{ 1/0 }}) is the editor's to fix
            raise self._render_error(exc, template) from exc

    def _render_error(self, exc: Exception, template: str) -> RenderError:
        """An exception from rendering ``template``, as the RenderError that names its file and line."""
        where = _template_line(exc, self.templates_dir) or (self.templates_dir / template, 0)
        if isinstance(exc, TemplateError) and exc.message:
            message = exc.message
        else:
            message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, TemplateSyntaxError):
            message = f"template syntax error: {message}"
        return RenderError(where[0], where[1], message)

    def _build(self, template: str, year: int) -> _Compiled:
        context = self._context(self._describe(template), self._slots.markers())
        html = self._render_html(template, context)
        try:
            for name, value in (("subject", context["step"]["subject"]), ("preheader", context["step"]["preheader"]), ("body", html)):
                self._slots.check_intact(name, value)
            html_segments, keys = self._slots.split_html(inline_css(html))
        except SlotError as exc:  # the slots know the mistake, not the file: say where it is
            raise RenderError(self.templates_dir / template, 0, str(exc)) from exc
        text = html_to_text(html)
        return _Compiled(
            subject=self._slots.split_line(context["step"]["subject"]),
            preheader=self._slots.split_line(context["step"]["preheader"]),
            html=html_segments,
            text=self._slots.split_text(text),
            keys=frozenset(keys),
        )


_CLINIC_TEXT = {
    "name": "", "postal_address": "", "phone": "", "website_url": "",
    "cost": DEFAULT_COST_TEXT, "insurance": DEFAULT_INSURANCE_TEXT, "consultation_format": "either",
}


def _clinic_context(clinic: Mapping[str, Any] | Any) -> dict[str, Any]:
    """``clinic.*`` for templates: text values as strings, the certification as a real boolean
    (the string "False" would be true in ``{% if %}``)."""
    values: dict[str, Any] = {name: _clinic_value(clinic, name, default) for name, default in _CLINIC_TEXT.items()}
    values["esketamine_certified"] = _clinic_value(clinic, "esketamine_certified", "false").strip().lower() == "true"
    return values


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
