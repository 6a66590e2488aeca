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
step.extra              campaign  true for a step with a condition (a reminder): not numbered or counted
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

Where the parts live: values cleaned and campaign values in :mod:`nurture.render_values`, the loader
and an email's files in :mod:`nurture.template_loader`, errors mapped to template lines in
:mod:`nurture.template_errors`, premailer in :mod:`nurture.css_inlining`, the cache of versions in
:mod:`nurture.template_versions`. The year comes from the ``clock`` the caller gives the renderer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from nurture.clock import utcnow
from nurture.content.css_inlining import inline_css, quiet_cssutils
from nurture.content.plaintext import html_to_text
from nurture.content.recipient_slots import RecipientSlots, SlotError, fillers
from nurture.content.render_values import (
    FIRST_NAME_FALLBACK,
    RECIPIENT_KEYS,
    clinic_context,
    clinic_value,
    number_words,
    prepare_recipient,
    sample_recipient,
    when_phrase,
)
from nurture.content.sequences import LocatedError, Place, Step, TemplateFormatError, place_email
from nurture.content.template_errors import error_message, front_matter_line, template_line
from nurture.content.template_loader import FrontMatterLoader, TemplateSourceError, template_files
from nurture.content.template_versions import RECHECK_SECONDS, Compiled, TemplateVersions

__all__ = [
    "TEMPLATE_CONTEXT",
    "ContextVariable",
    "RenderError",
    "Rendered",
    "Renderer",
]


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
    ContextVariable("step.extra", "campaign", "true for a step with a condition (a reminder): not numbered or counted"),
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
    """One email as it goes out: subject, HTML with its CSS inlined, text part, preheader."""

    subject: str
    html: str
    text: str
    preheader: str


class RenderError(LocatedError):
    """A template that cannot be rendered; str() is ``path:line: message``."""


class Renderer:
    """Renders emails from ``templates_dir``; safe to share between threads.

    ``clinic`` is a mapping or an object with ``name``, ``postal_address``,
    ``phone``, ``website_url`` (and optionally ``consultation_url``, ``cost``,
    ``insurance``, ``consultation_format``, ``esketamine_certified``; see
    :class:`nurture.config.Settings` for what they mean and their defaults).
    ``year`` fixes the footer's year; otherwise it is ``clock()``'s (the entry
    points pass :func:`nurture.clock.utcnow`, tests a fixed instant).
    """

    def __init__(
        self,
        templates_dir: Path,
        *,
        clinic: Mapping[str, Any] | Any,
        base_url: str,
        consultation_url: str | None = None,
        year: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        quiet_cssutils()
        self.templates_dir = Path(templates_dir)
        self.base_url = base_url.rstrip("/")
        self.clinic = clinic_context(clinic)
        self.consultation_url = (
            consultation_url
            or clinic_value(clinic, "consultation_url", None)
            or f"{self.clinic['website_url'].rstrip('/') or self.base_url}/consultation"
        )
        self._year = year
        self._clock = clock
        self.env = SandboxedEnvironment(
            loader=FrontMatterLoader(str(self.templates_dir)),
            autoescape=True,
            undefined=StrictUndefined,
            auto_reload=True,
        )
        self._line_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
        for env in (self.env, self._line_env):
            env.filters["words"] = number_words
        self._slots = RecipientSlots(RECIPIENT_KEYS)
        self._versions = TemplateVersions(self.templates_dir, recheck_seconds)

    # ------------------------------------------------------------------ public

    def sample_recipient(self) -> dict[str, str]:
        """A made-up recipient (first name "Alex", URLs under base_url) for previews."""
        return sample_recipient(self.base_url)

    def render(self, template: str, recipient: Mapping[str, Any]) -> Rendered:
        """Subject, inlined HTML, text and preheader of ``template`` for one recipient."""
        compiled = self._compiled(template)
        values = prepare_recipient(recipient)
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
        values = prepare_recipient(recipient)
        context = self._context(self._describe(template), values, self._current_year())
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
        return self._context(self._describe(template), prepare_recipient(recipient), self._current_year())

    def dependencies(self, template: str) -> list[Path]:
        """Files whose content makes up ``template``: itself, what it extends/includes, its sibling steps."""
        try:
            return template_files(self.env, self.templates_dir, template)
        except TemplateSourceError as exc:
            raise RenderError(exc.path, exc.line, exc.message) from exc

    def version(self, template: str) -> str:
        """The fingerprint of the version :meth:`render` uses for ``template`` now (its files, the
        campaign values and the year): the same string for as long as none of them changes, so a
        caller can key its own per-version work by it. Costs what a render's lookup costs."""
        self._compiled(template)
        return self._versions.current(template) or ""

    # ------------------------------------------------------------------ cache

    def _current_year(self) -> int:
        return self._year if self._year is not None else self._clock().year

    def _compiled(self, template: str) -> Compiled:
        return self._versions.get(
            template,
            year=self._current_year(),
            campaign=self._campaign(),
            files=self.dependencies,
            build=self._build,
        )

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
            path = self.templates_dir / step.template
            raise RenderError(path, front_matter_line(path, field), f"{field}: {exc}") from exc
        return " ".join(rendered.split())

    def _context(self, place: Place, values: Mapping[str, str], year: int) -> dict[str, Any]:
        step = place.step
        context: dict[str, Any] = {
            **self._campaign(),
            "sequence": {"name": step.sequence or "system"},
            "year": year,
            **values,
        }
        context["step"] = self._step_lines(step, place.number, place.total, context)
        context["step"]["next"] = self._next(place, context)
        return context

    def _step_lines(self, step: Step, number: int, total: int, context: dict[str, Any]) -> dict[str, Any]:
        """``step`` as templates see it; its subject and preheader may use its own number and total
        (numbers count the series' steps: a conditional extra is not numbered, see sequences.py)."""
        info: dict[str, Any] = {"key": step.key, "number": number, "total": total, "extra": step.is_extra}
        own = {**context, "step": info}
        info["subject"] = self._line(step, "subject", step.subject, own)
        info["preheader"] = self._line(step, "preheader", step.preheader, own)
        return info

    def _next(self, place: Place, context: dict[str, Any]) -> dict[str, Any] | None:
        """``step.next``: so "what comes next" in an email follows the sequence when steps change."""
        if place.next is None:
            return None
        days = place.next.delay_days - place.step.delay_days
        return {**self._step_lines(place.next, place.number + 1, place.total, context), "days": days,
                "when": when_phrase(days)}

    def _render_html(self, template: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(template).render(context)
        except RenderError:
            raise
        except Exception as exc:  # noqa: BLE001 - any mistake in a template ({{ 1/0 }}) is the editor's to fix
            raise self._render_error(exc, template) from exc

    def _render_error(self, exc: Exception, template: str) -> RenderError:
        """An exception from rendering ``template``, as the RenderError that names its file and line."""
        where = template_line(exc, self.templates_dir) or (self.templates_dir / template, 0)
        return RenderError(where[0], where[1], error_message(exc))

    def _build(self, template: str, year: int) -> Compiled:
        """Render ``template`` once with markers for the recipient values, inline its CSS, split it."""
        if self.env.cache is not None:  # Jinja's own cache goes by mtime; we go by content
            self.env.cache.clear()
        context = self._context(self._describe(template), self._slots.markers(), year)
        html = self._render_html(template, context)
        try:
            for name, value in (("subject", context["step"]["subject"]), ("preheader", context["step"]["preheader"]), ("body", html)):
                self._slots.check_intact(name, value)
            html_segments, keys = self._slots.split_html(inline_css(html))
        except SlotError as exc:  # the slots know the mistake, not the file: say where it is
            raise RenderError(self.templates_dir / template, 0, str(exc)) from exc
        text = html_to_text(html)
        return Compiled(
            subject=self._slots.split_line(context["step"]["subject"]),
            preheader=self._slots.split_line(context["step"]["preheader"]),
            html=html_segments,
            text=self._slots.split_text(text),
            keys=frozenset(keys),
        )
