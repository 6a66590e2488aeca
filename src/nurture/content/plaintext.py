"""The plain-text part of an email, made from its HTML.

Marketing writes each email once, in HTML; the text part follows from it:

* headings stay visible: underlined with ``=`` (h1) or ``-`` (h2, h3);
* paragraphs are separated by one blank line and are NOT hard-wrapped:
  every mail client wraps plain text to the window, while text wrapped at 72
  columns turns into ragged half-lines on a 375 px phone;
* lists keep their bullets (``-``) or numbers, nested lists are indented;
* a link inside running text becomes ``label [1]`` with ``[1] URL`` listed at
  the end; a link that is a paragraph (or button) of its own becomes
  ``label: URL``; a link whose label is its URL is just the URL; ``mailto:``,
  ``tel:`` and ``sms:`` links are shown as their label (the address or number
  added when the label does not show it: "call 988" does, "(608) 555-0142" shows
  ``tel:+16085550142``, "call us" does not);
* the hidden preheader (``class="preheader"``), ``aria-hidden="true"`` and
  ``data-plaintext="skip"`` elements are left out, as are <head>, <style>,
  <script> and comments (Outlook conditional comments included).

Words are never changed (no upper-casing), so the renderer can run this once
on HTML holding placeholder markers and put recipient values in afterwards.
"""

from __future__ import annotations

import re

from lxml import etree
from lxml import html as lxml_html

__all__ = ["html_to_text"]

_BLOCK = frozenset(
    "address article aside blockquote body center dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr html li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_SKIP = frozenset({"head", "style", "script", "title", "template", "noscript"})
_UNDERLINE = {"h1": "=", "h2": "-", "h3": "-"}
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
HR = "-" * 40
_BR = "\x00"  # a <br>; source newlines are only whitespace (values never hold control characters)


def _hidden(el: etree._Element) -> bool:
    classes = (el.get("class") or "").split()
    return "preheader" in classes or el.get("aria-hidden") == "true" or el.get("data-plaintext") == "skip"


class _Converter:
    def __init__(self) -> None:
        self.blocks: list[str] = []  # finished paragraphs
        self.line: list[str] = []  # inline pieces of the paragraph being built
        self.prefix: list[str] = []  # quote/list indentation stack
        self.links: list[str] = []

    # paragraph handling -------------------------------------------------
    def flush(self) -> None:
        text = "".join(self.line)
        self.line = []
        lines = [_SPACES.sub(" ", part).strip() for part in text.split(_BR)]
        lines = [line for line in lines if line]
        if not lines:
            return
        indent = "".join(self.prefix)
        self.blocks.append("\n".join(indent + line for line in lines))

    def inline(self, text: str | None) -> None:
        if text:
            self.line.append(text.replace("\xa0", " "))

    # tree walk ------------------------------------------------------------
    def walk(self, el: etree._Element) -> None:
        if not isinstance(el.tag, str):  # comments, processing instructions
            self.inline_tail(el)
            return
        tag = el.tag.lower()
        if tag in _SKIP or _hidden(el):
            self.inline_tail(el)
            return
        if tag == "br":
            self.line.append(_BR)
        elif tag == "hr":
            self.flush()
            self.blocks.append("".join(self.prefix) + HR)
        elif tag == "img":
            alt = (el.get("alt") or "").strip()
            if alt:
                self.inline(alt)
        elif tag == "a" and el.get("href"):
            self.link(el)
        elif tag in _UNDERLINE:
            self.flush()
            self.children(el)
            text = "".join(self.line).replace(_BR, " ")
            self.line = []
            heading = _SPACES.sub(" ", text).strip()
            if heading:
                self.blocks.append(heading + "\n" + _UNDERLINE[tag] * len(heading))
        elif tag in ("ul", "ol"):
            self.flush()
            self.list(el, ordered=tag == "ol")
        elif tag == "blockquote":
            self.flush()
            self.prefix.append("> ")
            self.children(el)
            self.flush()
            self.prefix.pop()
        elif tag in _BLOCK:
            self.flush()
            self.children(el)
            self.flush()
        else:
            self.children(el)
        self.inline_tail(el)

    def inline_tail(self, el: etree._Element) -> None:
        self.inline(el.tail)

    def children(self, el: etree._Element) -> None:
        self.inline(el.text)
        for child in el:
            self.walk(child)

    def list(self, el: etree._Element, *, ordered: bool) -> None:
        number = 0
        items: list[str] = []
        for child in el:
            if isinstance(child.tag, str) and child.tag.lower() == "li" and not _hidden(child):
                number += 1
                bullet = f"{number}. " if ordered else "- "
                start = len(self.blocks)
                self.prefix.append(" " * len(bullet))
                self.children(child)
                self.flush()
                self.prefix.pop()
                item = self.blocks[start:]
                del self.blocks[start:]
                if item:
                    indent = "".join(self.prefix)
                    # Put the bullet in place of the item's indentation on its first line.
                    item[0] = indent + bullet + item[0][len(indent) + len(bullet) :]
                    items.append("\n".join(item))
            elif isinstance(child.tag, str):
                self.walk(child)
        if items:
            # One block for the whole list: no blank lines between its items.
            self.blocks.append("\n".join(items))

    def link(self, el: etree._Element) -> None:
        href = (el.get("href") or "").strip()
        before = len(self.line)
        self.children(el)
        label = _SPACES.sub(" ", "".join(self.line[before:]).replace(_BR, " ")).strip()
        if href.startswith(("mailto:", "tel:", "sms:")):
            address = href.split(":", 1)[1].split("?", 1)[0]
            if label and address and not _shows(label, address):
                self.line.append(f" ({address})")
            elif not label:
                self.line.append(address)
            return
        if not label or label == href:
            del self.line[before:]
            self.line.append(href)
            return
        if self.alone(el):
            self.line.append(": " + href)
            return
        if href not in self.links:
            self.links.append(href)
        self.line.append(f" [{self.links.index(href) + 1}]")

    @staticmethod
    def alone(el: etree._Element) -> bool:
        """True when the link is all the text of its nearest block (a button, a 'Book now' line)."""
        block = el.getparent()
        while block is not None and not (isinstance(block.tag, str) and block.tag.lower() in _BLOCK):
            block = block.getparent()
        if block is None:
            return False
        return _SPACES.sub(" ", block.text_content()).strip() == _SPACES.sub(" ", el.text_content()).strip()

    def result(self) -> str:
        self.flush()
        out = "\n\n".join(self.blocks)
        if self.links:
            notes = "\n".join(f"[{n}] {url}" for n, url in enumerate(self.links, 1))
            out += "\n\n" + HR + "\n" + notes
        return out + "\n"


def _shows(label: str, address: str) -> bool:
    """The label already says the address: "(608) 555-0142" shows tel:+16085550142 (the same
    digits, the country code aside)."""
    if address in label:
        return True
    digits, dialled = re.sub(r"\D", "", label), re.sub(r"\D", "", address)
    return len(digits) >= 3 and dialled.endswith(digits) and not re.search(r"[^\d\s()+.-]", label)


def html_to_text(html: str) -> str:
    """Readable plain text for an HTML email (see the module docstring for the rules)."""
    if not html.strip():
        return ""
    root = lxml_html.document_fromstring(html)
    body = root.find("body")
    converter = _Converter()
    converter.walk(body if body is not None else root)
    return converter.result()
