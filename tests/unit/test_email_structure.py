"""The rendered HTML of every shipped email has the constructs the real clients need (issue 11):
structure, not pixels (tests/browser/test_email_clients.py looks at pixels).

- buttons: the padding on the table cell (with mso-padding-alt for Outlook's Word engine), never on
  the <a>; Outlook ignores padding and inline-block on links;
- the preheader hidden by display and size, never by a colour (SpamAssassin's HTML_FONT_LOW_CONTRAST),
  then filler so the body does not run on into the inbox preview;
- lang/dir and role="article" with the subject as its name on a wrapper inside <body> (Gmail drops <html>);
- light and dark colour schemes declared, prefers-color-scheme and the phone @media rules kept in <style>;
- Outlook's PixelsPerInch 96 and a fixed 600 px ghost table in [if mso] comments; fluid elsewhere;
- marketing footers: the crisis box as a table cell with call, text and chat 988 and 911, the
  clinic's phone as a tel: link, every footer link a 24 px tap target.
"""

from __future__ import annotations

import re

import pytest
from lxml import etree
from lxml import html as lxml_html

from nurture.config import load_settings
from nurture.content.render_values import sample_recipient
from nurture.content.rendering import Renderer

from shipped_emails import TEMPLATES, shipped_templates

BASE = "https://mail.clinic.example"
TEMPLATE_NAMES = shipped_templates()


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_BASE_URL": BASE})
    return Renderer(TEMPLATES, clinic=settings.clinic, base_url=BASE, consultation_url=settings.consultation_url)


def styles(el) -> dict[str, str]:
    pairs = (part.split(":", 1) for part in (el.get("style") or "").split(";") if ":" in part)
    return {name.strip().lower(): value.strip() for name, value in pairs}


@pytest.fixture(scope="module", params=TEMPLATE_NAMES)
def email(request, renderer):
    rendered = renderer.render(request.param, sample_recipient(BASE))
    return request.param, rendered, lxml_html.document_fromstring(rendered.html)


def test_buttons_are_padded_on_the_cell_never_on_the_link(email):
    name, _rendered, root = email
    for link in root.cssselect("a.button-link"):
        cell = link.getparent()
        assert cell.tag == "td" and "button-cell" in cell.get("class")
        cell_style = styles(cell)
        assert re.fullmatch(r"\d+px \d+px", cell_style["padding"]), cell_style
        assert cell_style["mso-padding-alt"] == cell_style["padding"]
        assert cell.get("bgcolor") and cell_style["background-color"]
        link_style = styles(link)
        assert link_style["display"] == "inline-block" and int(link_style["line-height"].removesuffix("px")) >= 24
    for link in root.iter("a"):
        assert not any(prop.startswith("padding") for prop in styles(link)), f"{name}: padding on {link.text!r}"


def test_the_confirmation_and_the_invitation_have_buttons(renderer):
    for name in ("system/confirm.html.j2", "nurture/40-consultation-invite.html.j2"):
        root = lxml_html.document_fromstring(renderer.render(name, sample_recipient(BASE)).html)
        assert root.cssselect("td.button-cell > a.button-link"), name


def test_the_preheader_is_hidden_without_a_colour_and_followed_by_filler(email):
    name, rendered, root = email
    hidden = root.cssselect("body .preheader")
    assert len(hidden) == 2, name
    preheader, filler = hidden
    assert preheader.text_content() == rendered.preheader
    for el in hidden:
        style = styles(el)
        assert style["display"] == "none" and style["max-height"] == "0" and style["opacity"] == "0"
        assert style["mso-hide"] == "all" and style["overflow"] == "hidden"
        assert "color" not in style, f"{name}: a colour matching the background reads as hidden text to spam filters"
    assert filler.get("aria-hidden") == "true"
    assert set(filler.text_content()) == {"\u034f", "\u200c", "\u00a0"} and len(filler.text_content()) >= 120
    # Nothing in the message is coloured like the background behind it.
    assert "color:#f2f4f3" not in rendered.html.replace(" ", "").replace("background-color:#f2f4f3", "")


def test_lang_dir_and_the_article_wrapper_are_inside_body(email):
    name, rendered, root = email
    body = root.find("body")
    wrapper = body[0]
    assert (wrapper.tag, wrapper.get("lang"), wrapper.get("dir"), wrapper.get("role")) == ("div", "en", "ltr", "article")
    assert wrapper.get("aria-label") == rendered.subject
    assert len(body) == 1  # everything the reader sees is inside it


def test_colour_schemes_office_settings_and_queries_survive_inlining(email):
    name, rendered, root = email
    metas = {m.get("name"): m.get("content") for m in root.iter("meta") if m.get("name")}
    assert metas["color-scheme"] == "light dark" and metas["supported-color-schemes"] == "light dark"
    style = "".join(s.text for s in root.iter("style"))
    assert re.search(r":root\s*\{[^}]*color-scheme:\s*light dark", style)
    assert "@media (prefers-color-scheme: dark)" in style and "@media only screen and (max-width: 480px)" in style
    head = etree.tostring(root.find("head"), encoding="unicode")
    assert re.search(r"<!--\[if mso\]>.*<o:PixelsPerInch>96</o:PixelsPerInch>.*<!\[endif\]-->", head, re.S)
    assert 'xmlns:o="urn:schemas-microsoft-com:office:office"' in rendered.html
    # Fluid for every client, fixed at 600 px for Outlook's Word engine only.
    container = root.cssselect("table.container")[0]
    assert container.get("width") == "100%" and styles(container)["max-width"] == "600px"
    assert re.search(r'<!--\[if mso\]><table role="presentation" width="600"', rendered.html)
    for cell in root.cssselect("td.content, td.footer, td.masthead"):
        style = styles(cell)
        assert "%" in style["padding"] and "%" not in style["mso-padding-alt"]  # Word needs pixels
        assert style["mso-line-height-rule"] == "exactly"


MARKETING = [name for name in TEMPLATE_NAMES if not name.startswith("system/")]


@pytest.mark.parametrize("name", MARKETING)
def test_the_marketing_footer(renderer, name):
    rendered = renderer.render(name, sample_recipient(BASE))
    root = lxml_html.document_fromstring(rendered.html)
    footer = root.cssselect("td.footer")[0]
    crisis = footer.cssselect("td.crisis-cell")
    assert len(crisis) == 1 and styles(crisis[0])["border"] and styles(crisis[0])["padding"]
    hrefs = [a.get("href") for a in crisis[0].iter("a")]
    assert hrefs == ["tel:988", "sms:988", "https://988lifeline.org/chat/", "tel:911"]
    text = " ".join(footer.text_content().split())
    assert "not monitored for emergencies" in text and "immediate danger" in text
    assert "depression and PTSD is off-label" in text and "FDA-approved for treatment-resistant depression" in text
    assert "tel:+16085550142" in [a.get("href") for a in footer.iter("a")]  # (608) 555-0142, dialable
    for link in footer.iter("a"):
        style = styles(link)
        assert style["display"] == "inline-block" and style["min-height"] == "24px", link.text_content()
