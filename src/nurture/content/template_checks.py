"""The template validator: every mistake marketing can make in templates/emails, as data.

``nurture templates validate`` prints these; the studio shows them next to the
editor. Checks run on the RENDERED output (with a sample recipient), so a
footer that the shared layout provides counts for every email, and a footer
block overridden in one email is caught in that email. What the footer must
hold is looked for in the footer block itself: a crisis line near the top of
an email does not stand in for the one in its footer.

The wording rules (health terms in subjects and preheaders, counts that
disagree with the sequence, claims; see :mod:`nurture.content_rules`) are
warnings, and errors with ``strict`` (``nurture templates validate --strict``,
which ``make test`` runs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from jinja2 import TemplateSyntaxError
from lxml import etree

from nurture.content.content_rules import (
    Finding,
    Paragraph,
    claims,
    count_mistakes,
    health_terms,
    load_health_terms,
    past_dates,
)
from nurture.content.render_values import RECIPIENT_KEYS, sample_recipient
from nurture.content.rendering import Rendered, Renderer, RenderError
from nurture.content.sequences import EMAIL_SUFFIX, NOT_SEQUENCES, Place, scan_templates
from nurture.message_key import Kind

__all__ = ["MAX_HTML_BYTES", "SAMPLE_CLINIC", "Problem", "check_templates"]

#: Gmail clips a message whose HTML is over 102 KB ("[Message clipped]"), hiding the footer.
MAX_HTML_BYTES = 100 * 1024
SUBJECT_WARN_CHARS = 70

SAMPLE_CLINIC = {
    "name": "Sample Clinic",
    "postal_address": "1 Sample Street, Sampletown, ST 00000, USA",
    "phone": "(555) 010-0100",
    "website_url": "https://clinic.example",
}
_LIFELINE_HOSTS = ("988lifeline.org", "www.988lifeline.org")
# Blocks of running text, for the claims rule: a citation counts within the same one.
_TEXT_BLOCKS = frozenset({"p", "li", "h1", "h2", "h3", "h4", "td", "blockquote", "dd", "dt"})
_DOI = re.compile(r"\b10\.\d{4,9}/\S+")
# The confirmation email must not echo anything the subscriber typed; this name must not appear in it.
_CANARY_NAME = "Zq-Canary-Name"


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str
    severity: str = "error"  # "error" refuses the templates; "warning" is advice

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def check_templates(
    templates_dir: Path,
    *,
    base_url: str,
    dev: bool,
    clinic: Mapping[str, Any] | None = None,
    strict: bool = False,
    today: date | None = None,
) -> list[Problem]:
    """Every problem in the templates, sorted by file and line; an empty list means all is well.

    ``dev`` allows links to ``base_url`` that are not https (a local server). ``strict`` makes
    the wording rules errors instead of warnings. ``today`` warns about dates in the text that
    have passed (always a warning: a date passing must not fail a build).
    """
    templates_dir = Path(templates_dir)
    clinic = dict(clinic or SAMPLE_CLINIC)
    renderer = Renderer(templates_dir, clinic=clinic, base_url=base_url)
    found: list[Problem] = []

    def report(path: Path | str, line: int, message: str, severity: str = "error") -> None:
        problem = Problem(Path(path), line, message, severity)
        if problem not in found:
            found.append(problem)

    sequences, newsletters, format_errors = scan_templates(templates_dir)
    for error in format_errors:
        report(error.path, error.line, error.message)
    _check_syntax(report, renderer, templates_dir)

    marketing = {step.template for seq in sequences.values() for step in seq.steps}
    marketing |= {step.template for step in newsletters.values()}
    places = _places(templates_dir, sequences, format_errors)
    wording = _Wording(report, load_health_terms(templates_dir), "error" if strict else "warning", today)
    for path in _email_files(templates_dir):
        name = path.relative_to(templates_dir).as_posix()
        is_marketing = Kind.of_template(name).is_marketing
        if is_marketing and name not in marketing:
            continue  # its front matter or place in the sequence is wrong: reported above
        _check_email(report, renderer, path, name, is_marketing, clinic, base_url=base_url, dev=dev,
                     wording=wording, place=places.get(name))
    return sorted(found, key=lambda p: (str(p.path), p.line, p.message))


def _check_syntax(report: Callable[..., None], renderer: Renderer, templates_dir: Path) -> None:
    """Every template file compiles (layouts and partials too, not only the emails)."""
    for path in sorted(templates_dir.rglob("*.j2")):
        name = path.relative_to(templates_dir).as_posix()
        try:
            renderer.env.get_template(name)
        except TemplateSyntaxError as exc:
            report(exc.filename or path, exc.lineno, f"template syntax error: {exc.message}")


def _places(templates_dir: Path, sequences: Mapping[str, Any], format_errors: list) -> dict[str, tuple[int, int, bool]]:
    """(number, total, has a next step) of each sequence step, for counts in its text. Not for a
    sequence with a file whose front matter is broken: without that file the numbers would be
    wrong, and every later step would be warned about a count that is in fact right."""
    unsure = {Path(error.path).resolve().parent for error in format_errors}
    places = (Place.in_sequence(seq.steps, index) for seq in sequences.values() for index in range(len(seq.steps)))
    return {place.step.template: (place.number, place.total, place.next is not None) for place in places
            if (templates_dir / place.step.template).resolve().parent not in unsure}


def _check_email(report: Callable[..., None], renderer: Renderer, path: Path, name: str, is_marketing: bool,
                 clinic: Mapping[str, Any], *, base_url: str, dev: bool, wording: _Wording,
                 place: tuple[int, int, bool] | None) -> None:
    """One email, rendered for the sample recipient: its footer, HTML, wording and subject."""
    recipient = sample_recipient(base_url)
    if not is_marketing:
        recipient["first_name"] = _CANARY_NAME
    try:
        rendered = renderer.render(name, recipient)
    except RenderError as exc:
        report(exc.path, exc.line or _guess_line(exc.path, exc.message), _explain(exc.message))
        return
    except ValueError as exc:  # pragma: no cover - recipient values are ours
        report(path, 1, str(exc))
        return
    sources = [p for p in renderer.dependencies(name) if p.is_file()]
    anchor = _extends_line(path)
    try:
        footer = renderer.render_block(name, "footer", recipient) or ""
    except RenderError as exc:  # pragma: no cover - render() above fails first on the same mistake
        report(exc.path, exc.line, exc.message)
        return
    if is_marketing:
        _check_marketing(report, path, anchor, footer, recipient, clinic)
    elif path.name == "confirm.html.j2":
        _check_confirm(report, path, anchor, rendered, footer, recipient)
    _check_html(report, path, anchor, rendered, recipient, sources, base_url=base_url, dev=dev)
    wording.check(path, rendered, sources, place)
    if len(rendered.subject) > SUBJECT_WARN_CHARS:
        report(path, _front_line(path, "subject"),
               f"the subject is {len(rendered.subject)} characters; inboxes cut it at about {SUBJECT_WARN_CHARS}",
               "warning")


def _email_files(templates_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in templates_dir.glob(f"*/*{EMAIL_SUFFIX}")
        if not p.name.startswith(".") and (p.parent.name in NOT_SEQUENCES or not p.parent.name.startswith((".", "_")))
    )


def _check_marketing(report, path: Path, anchor: int, footer: str, recipient: dict[str, str], clinic: Mapping[str, Any]) -> None:
    """What every marketing email's footer block must say (DESIGN: unsubscribe, postal address,
    disclaimer, crisis care), looked for in the footer itself."""
    hrefs, text = _links_and_text(footer)
    lower = text.lower()
    where = "the layout's footer provides it unless the footer block is replaced"
    required = (
        (recipient["unsubscribe_url"] in hrefs, 'unsubscribe link (<a href="{{ unsubscribe_url }}">)'),
        (recipient["preferences_url"] in hrefs, 'preferences link (<a href="{{ preferences_url }}">)'),
        ("not medical advice" in lower, "'not medical advice' disclaimer"),
        ("off-label" in lower and "esketamine" in lower,
         "line saying ketamine for depression is off-label and esketamine (Spravato) is approved"),
        ("ptsd" in lower or "post-traumatic" in lower, "PTSD in the off-label line (the invitation mentions PTSD)"),
        ("tel:988" in hrefs, 'link to call 988, the Suicide & Crisis Lifeline (<a href="tel:988">)'),
        ("sms:988" in hrefs, 'link to text 988 (<a href="sms:988">)'),
        (any(_is_lifeline(href) for href in hrefs), "link to the 988 Lifeline's chat (https://988lifeline.org)"),
        (re.search(r"\b911\b", text) is not None, "911 for immediate danger"),
        ("not monitored" in lower, "line saying this inbox is not monitored for emergencies"),
        (" ".join(str(clinic["postal_address"]).split()) in text, "postal address ({{ clinic.postal_address }})"),
    )
    for present, what in required:
        if not present:
            report(path, anchor, f"marketing email has no {what} in its footer block; {where}")


def _check_confirm(report, path: Path, anchor: int, rendered: Rendered, footer: str, recipient: dict[str, str]) -> None:
    root = _parse(rendered.html)
    if recipient["confirm_url"] not in {a.get("href") for a in root.iter("a")}:
        report(path, anchor, 'the confirmation email has no confirm link (<a href="{{ confirm_url }}">)')
    if _CANARY_NAME in rendered.html or _CANARY_NAME in rendered.subject:
        report(path, _find_line(path, "first_name") or anchor, "the confirmation email must not include anything the subscriber typed (first_name)")
    # Often the first email a person in distress receives from the clinic: the short crisis line.
    if not {"tel:988", "sms:988"} & _links_and_text(footer)[0]:
        report(path, _find_line(path, "{% block footer") or anchor,
               'the confirmation email has no crisis line in its footer (call or text 988: <a href="tel:988">, <a href="sms:988">)')


def _links_and_text(fragment: str) -> tuple[set[str], str]:
    """The hrefs (tel: and sms: without their ?query) and the words of an HTML fragment such as
    the footer block."""
    if not fragment.strip():
        return set(), ""
    root = _parse(f"<div>{fragment}</div>")
    hrefs = {href if href.startswith("http") else href.split("?", 1)[0]
             for a in root.iter("a") if (href := (a.get("href") or "").strip())}
    return hrefs, " ".join(" ".join(root.itertext()).split())


def _is_lifeline(href: str) -> bool:
    parts = urlsplit(href)
    return parts.scheme == "https" and (parts.hostname or "") in _LIFELINE_HOSTS


class _Wording:
    """The wording rules of :mod:`nurture.content_rules`, reported at the line that says it."""

    def __init__(self, report, terms: tuple[str, ...], severity: str, today: date | None) -> None:
        self.report, self.terms, self.severity, self.today = report, terms, severity, today

    def check(self, path: Path, rendered: Rendered, sources: list[Path], place: tuple[int, int, bool] | None) -> None:
        for field, line in (("subject", rendered.subject), ("preheader", rendered.preheader)):
            at = _front_line(path, field)
            for finding in health_terms(line, self.terms):
                self.report(path, at, f"the {field} shows on lock screens: {finding.message}; keep health words "
                                      "out of it (the list: health-terms.txt beside the templates)", self.severity)
            if place:
                for finding in count_mistakes(line, number=place[0], total=place[1], has_next=place[2], is_line=True):
                    self.report(path, at, f"the {field} says {finding.message}", self.severity)
            for finding in claims(Paragraph(line, cited=False)):
                self.report(path, at, f"the {field} makes a {finding.message}", self.severity)
        paragraphs = _paragraphs(rendered.html)
        if place:
            text = " ".join(p.text for p in paragraphs)
            for finding in count_mistakes(text, number=place[0], total=place[1], has_next=place[2]):
                self._body(path, sources, finding)
        for paragraph in paragraphs:
            for finding in claims(paragraph):
                self._body(path, sources, finding)
            for finding in past_dates(paragraph.text, self.today) if self.today else ():
                self._body(path, sources, finding, "warning")

    def _body(self, path: Path, sources: list[Path], finding: Finding, severity: str | None = None) -> None:
        where = _locate_words(sources, finding.phrase) or (path, _extends_line(path))
        self.report(where[0], where[1], finding.message, severity or self.severity)


def _paragraphs(html: str) -> list[Paragraph]:
    """Each innermost block of text in the email body (not the hidden preheader) and whether it
    cites a source: an https link or a DOI."""
    root = _parse(html)
    body = root.find("body")
    found = []
    for el in (body if body is not None else root).iter():
        if not isinstance(el.tag, str) or el.tag not in _TEXT_BLOCKS:
            continue
        if any(isinstance(child.tag, str) and child.tag in _TEXT_BLOCKS for child in el.iterdescendants()):
            continue
        text = " ".join(" ".join(el.itertext()).split())
        if text:
            cited = any((a.get("href") or "").startswith("https://") for a in el.iter("a")) or bool(_DOI.search(text))
            found.append(Paragraph(text, cited))
    return found


def _check_html(
    report, path: Path, anchor: int, rendered: Rendered, recipient: dict[str, str], sources: list[Path], *, base_url: str, dev: bool
) -> None:
    root = _parse(rendered.html)
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in ("href", "src"):
            url = el.get(attr)
            if url is None:
                continue
            if _allowed_url(url, attr, base_url=base_url, dev=dev):
                continue
            # A recipient value's URL is found by its name ({{ unsubscribe_url }}), anything else literally.
            key = next((k for k, v in recipient.items() if v == url), None)
            where = (key and (_locate(sources, "{{ " + key) or _locate(sources, key))) or _locate(sources, url) or (path, anchor)
            hint = " (base_url is not https; that is allowed only in dev mode)" if url.startswith(base_url) else ""
            report(where[0], where[1], f"{'link' if attr == 'href' else 'image'} is not https: {url}{hint}")
        if el.tag == "img" and el.get("alt") is None:
            where = _locate_img_without_alt(sources) or (path, anchor)
            report(where[0], where[1], '<img> has no alt text (use alt="" for a decorative image)')
        if el.tag == "link" and "stylesheet" in (el.get("rel") or ""):
            report(path, anchor, "external stylesheets are never loaded; put CSS in the layout's <style>")
    size = len(rendered.html.encode("utf-8"))
    if size > MAX_HTML_BYTES:
        report(path, anchor, f"the HTML part is {size / 1024:.0f} KB; Gmail clips emails over 102 KB, keep it under {MAX_HTML_BYTES // 1024} KB")


def _allowed_url(url: str, attr: str, *, base_url: str, dev: bool) -> bool:
    if url.startswith("https://"):
        return True
    if attr == "href" and url.startswith(("mailto:", "tel:", "sms:")):  # sms: texting 988
        return True
    return dev and url.startswith(base_url.rstrip("/") + "/")


def _parse(html: str) -> etree._Element:
    return etree.fromstring(html.strip(), etree.HTMLParser())


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").split("\n")
    except OSError:
        return []


def _find_line(path: Path, needle: str) -> int | None:
    for number, line in enumerate(_lines(path), 1):
        if needle in line:
            return number
    return None


def _locate(sources: list[Path], needle: str) -> tuple[Path, int] | None:
    for source in sources:
        line = _find_line(source, needle)
        if line:
            return source, line
    return None


def _locate_words(sources: list[Path], phrase: str) -> tuple[Path, int] | None:
    """The first line of the first source holding ``phrase`` (any case), else its first word:
    a phrase made by Jinja or wrapped across lines is found by where it starts."""
    for needle in (phrase, phrase.split()[0]):
        pattern = re.compile(re.escape(needle), re.IGNORECASE)
        for source in sources:
            for number, line in enumerate(_lines(source), 1):
                if pattern.search(line):
                    return source, number
    return None


def _locate_img_without_alt(sources: list[Path]) -> tuple[Path, int] | None:
    for source in sources:
        for number, line in enumerate(_lines(source), 1):
            for tag in re.findall(r"<img\b[^>]*>?", line, re.IGNORECASE):
                if not re.search(r"\balt\s*=", tag, re.IGNORECASE):
                    return source, number
    return None


def _extends_line(path: Path) -> int:
    return _find_line(path, "{% extends") or 1


def _front_line(path: Path, field: str) -> int:
    return _find_line(path, f"{field}:") or 1


def _guess_line(path: Path, message: str) -> int:
    """For errors Jinja cannot place (a filter on a recipient value): the first line doing that."""
    pattern = re.compile(rf"\b({'|'.join(RECIPIENT_KEYS)})\s*\|")
    for number, text in enumerate(_lines(path), 1):
        if pattern.search(text):
            return number
    return 1


def _explain(message: str) -> str:
    if message.endswith("is undefined"):
        return f"{message} (the variables a template may use are listed at the top of src/nurture/content/rendering.py)"
    return message
