"""Every shipped email in Chromium as the mail clients that do least would show it (issue 11):

- at 375 px with <style> removed (Gmail's apps with non-Google accounts): nothing wider than the
  screen, and the text keeps most of the width (fluid-hybrid, not the @media query, does it);
- every footer link and button a tap target of at least 24 x 24 px (WCAG 2.2, 2.5.8), with and
  without <style>;
- axe-core finds nothing, light and dark (prefers-color-scheme), apart from the two page-landmark
  rules that do not fit a message.
"""

from __future__ import annotations

import re

import pytest

from browser.axe import EMAIL_RULES_NOT_APPLICABLE, violations
from nurture.migrate import upgrade
from nurture.runtime import Runtime
from nurture.sending.transports import MemoryTransport

from conftest import make_settings
from shipped_emails import build_shipped, html_part, shipped_templates

pytestmark = pytest.mark.browser

TEMPLATES = shipped_templates()


@pytest.fixture(scope="module")
def emails(tmp_path_factory) -> dict[str, str]:
    """template -> the HTML part of the message the sender builds (links tracked, as sent)."""
    tmp = tmp_path_factory.mktemp("emails")
    url = f"sqlite:///{tmp / 'subscribers.db'}"
    upgrade(url)
    runtime = Runtime(make_settings(tmp, url, base_url="https://mail.clearwater-psychiatry.example"),
                      transport_override=MemoryTransport())
    try:
        return {template: html_part(build_shipped(runtime, template)) for template in TEMPLATES}
    finally:
        runtime.close()


def without_style(html: str) -> str:
    return re.sub(r"<style>.*?</style>", "", html, flags=re.S)


_TARGETS = """() => [...document.querySelectorAll('td.footer a, a.button-link')].map(a => {
  const box = a.getBoundingClientRect();
  return {text: a.textContent.trim(), width: box.width, height: box.height};
})"""


@pytest.mark.parametrize("template", TEMPLATES)
def test_without_style_at_375_px_the_layout_is_fluid_and_taps_are_24_px(emails, new_page, template):
    page = new_page(viewport={"width": 375, "height": 700})
    page.set_content(without_style(emails[template]))
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    text = page.evaluate("""() => { const p = document.querySelector('td.content p, td.content h1');
                                   return p.getBoundingClientRect().width; }""")
    assert text >= 375 - 2 * 32, "more than 32 px of side padding on a phone without the @media query"
    small = [t for t in page.evaluate(_TARGETS) if t["width"] < 24 or t["height"] < 24]
    assert small == []


@pytest.mark.parametrize("template", TEMPLATES)
def test_tap_targets_with_style_at_600_and_375_px(emails, new_page, template):
    for width in (600, 375):
        page = new_page(viewport={"width": width, "height": 700})
        page.set_content(emails[template])
        targets = page.evaluate(_TARGETS)
        assert targets and [t for t in targets if t["width"] < 24 or t["height"] < 24] == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_axe_finds_nothing_in_light_or_dark(emails, new_page, template, scheme):
    page = new_page(viewport={"width": 600, "height": 800})
    page.emulate_media(color_scheme=scheme)
    page.set_content(emails[template])
    if scheme == "dark":  # the dark palette really applies
        background = page.evaluate("getComputedStyle(document.querySelector('table.container')).backgroundColor")
        assert background == "rgb(23, 34, 37)"
    assert violations(page, exclude_rules=EMAIL_RULES_NOT_APPLICABLE) == []
