"""Recipient slots: an email rendered and inlined once, cut where the recipient values go.

Steps 1 and 3 of "How a render works" in :mod:`nurture.rendering`. :meth:`RecipientSlots.markers`
are the stand-ins a template version is rendered with; the ``split_*`` methods cut the result into
:class:`Segments`, each HTML slot noting where its marker stood (text, attribute, URL attribute)
so that :func:`fillers` escapes a value as libxml2 would have written it there. Nothing here
knows about template files: a marker the cut cannot handle raises :class:`SlotError`, which the
renderer reports against the template.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from html import unescape as html_unescape
from typing import Any, Callable

from lxml import etree
from markupsafe import escape


class SlotError(ValueError):
    """A recipient value where the per-recipient pass cannot fill it in (a comment, <style>, a filter...)."""


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


@dataclass(frozen=True)
class Segments:
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


class RecipientSlots:
    """The markers of one renderer, and the cutting of rendered text at them.

    The token is random per instance, so no template text can contain a marker by accident.
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = keys
        self._token = secrets.token_hex(6)
        self._marker_re = re.compile(rf"nrtr{self._token}([a-z])(\d+)x")

    def markers(self) -> dict[str, str]:
        """A stand-in for each recipient value, to render a template version with."""
        return {key: _Marker(self._marker("v", i)) for i, key in enumerate(self._keys)}

    def check_intact(self, where: str, rendered: str) -> None:
        """Refuse a recipient value a filter (|upper, |truncate...) changed: its marker no longer matches."""
        prefix = f"nrtr{self._token}"
        for match in re.finditer(re.escape(prefix[:8]), rendered, re.IGNORECASE):
            if not self._marker_re.match(rendered, match.start()):
                raise SlotError(
                    f"a recipient value is changed by a filter in the {where}; output it as {{{{ name }}}} only"
                )

    def split_line(self, text: str) -> Segments:
        """A subject or preheader: each value goes in as it is (the line is not HTML)."""
        return self._split(text, lambda kind, number: (self._key_of(number), "text"))

    def split_text(self, text: str) -> Segments:
        """The text part, cut as :meth:`split_line` cuts a line."""
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

    def split_html(self, html: str) -> tuple[Segments, set[str]]:
        """Give each marker in the inlined HTML a slot that knows how to escape its value."""
        parser = etree.HTMLParser()
        tree = etree.fromstring(html, parser).getroottree()
        specs: list[tuple[str, str, str, str]] = []
        keys: set[str] = set()

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
                    raise SlotError("a recipient value inside an HTML comment")
                if el.tail:
                    el.tail = retag(el.tail, lambda key: (key, "html", "", ""))
                continue
            tag = el.tag.lower()
            for name, value in el.attrib.items():
                if self._marker_re.search(name):
                    raise SlotError("a recipient value used as an attribute name")
                if not self._marker_re.search(value):
                    continue
                lower = name.lower()
                if lower in ("style", "class", "id") or lower.startswith("on"):
                    raise SlotError(f"a recipient value inside the {name!r} attribute of <{tag}>")
                kind = "uri" if _is_uri_attribute(tag, lower) else "html"
                el.set(name, retag(value, lambda key, kind=kind, tag=tag, name=name: (key, kind, tag, name)))
            if el.text and self._marker_re.search(el.text):
                if tag in ("style", "script"):
                    raise SlotError(f"a recipient value inside <{tag}>")
                el.text = retag(el.text, lambda key: (key, "html", "", ""))
            if el.tail:
                el.tail = retag(el.tail, lambda key: (key, "html", "", ""))
        if self._marker_re.search(tree.getroot().tag):  # pragma: no cover - lxml drops such tags
            raise SlotError("a recipient value used as a tag name")
        doctype = html.lstrip().startswith(tree.docinfo.doctype) if tree.docinfo.doctype else False
        out = etree.tostring(tree if doctype else tree.getroot(), method="html", encoding="utf-8").decode("utf-8")
        leftover = [m for m in self._marker_re.finditer(out) if m.group(1) != "s"]
        if leftover:  # pragma: no cover - every marker position is handled above
            raise SlotError("a recipient value in a place the renderer cannot handle")
        return self._split(out, lambda kind, number: specs[int(number)]), keys

    def _split(self, text: str, spec_for: Callable[[str, str], Any]) -> Segments:
        parts: list[str] = []
        slots: list[tuple[int, Any]] = []
        position = 0
        for match in self._marker_re.finditer(text):
            parts.append(text[position : match.start()])
            slots.append((len(parts), spec_for(match.group(1), match.group(2))))
            parts.append("")
            position = match.end()
        parts.append(text[position:])
        return Segments(tuple(parts), tuple(slots))

    def _key_of(self, number: str) -> str:
        return self._keys[int(number)]

    def _marker(self, kind: str, number: int) -> str:
        return f"nrtr{self._token}{kind}{number}x"


def fillers(values: Mapping[str, str]) -> tuple[Callable[[Any], str], Callable[[Any], str]]:
    """For one recipient's (cleaned) values: what goes in a text slot (subject, preheader, text
    part) and what in an HTML slot, for :meth:`Segments.fill`. A pair of closures, not a fill
    function per part, because the renderer's per-recipient pass is a few microseconds and an
    extra call per part shows."""
    escaped: dict[Any, str] = {}

    def text_value(spec: Any) -> str:
        if spec[1] == "rule":  # a heading underline as long as the heading with its values in
            _, _, char, static, keys = spec
            return char * (static + sum(len(values[k]) for k in keys))
        return values[spec[0]]

    def html_value(spec: Any) -> str:
        out = escaped.get(spec)
        if out is None:
            out = escaped[spec] = _escape_for(spec, values[spec[0]])
        return out

    return text_value, html_value


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
