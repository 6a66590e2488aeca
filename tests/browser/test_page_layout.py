"""Every public page at phone (375 px), small-tablet (600 px) and desktop (1280 px) widths: what a
person actually sees.

Checks what a screenshot would show a reviewer: nothing wider than the screen, text contrast of at
least WCAG AA, buttons and fields big enough to tap, the crisis line present and readable, and no
axe-core violation of any impact (at 375 and 1280 px). With NURTURE_SHOTS_DIR set, full-page
screenshots of each state are saved there to look at.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from browser.axe import violations
from nurture.models import Subscriber
from nurture.clock import utcnow

pytestmark = pytest.mark.browser

WIDTHS = (375, 600, 1280)
AXE_WIDTHS = (375, 1280)

# Runs in the page: the problems a person would notice, as readable strings.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth) problems.push(`page is ${doc.scrollWidth}px wide`);
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || box.width === 0 || box.right <= 0 || box.bottom <= 0) continue;
    const [a, b] = [lum(rgb(style.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: "${node.textContent.trim().slice(0, 40)}"`);
  }
  for (const el of document.querySelectorAll('button, input[type=email], input[type=text], main a')) {
    const box = el.getBoundingClientRect();
    if (box.right <= 0 || box.width === 0) continue;  // the honeypot, off screen
    // Links inside a sentence are exempt (WCAG 2.5.8); a link standing alone must be easy to hit.
    if (el.tagName === 'A' && el.parentElement.textContent.trim() !== el.textContent.trim()) continue;
    const min = el.tagName === 'A' ? 24 : 44;
    if (box.height < min) problems.push(`${el.tagName} "${(el.textContent || el.name).trim()}" is ${box.height}px tall`);
    if (box.right > window.innerWidth) problems.push(`${el.tagName} "${el.textContent.trim()}" overflows`);
  }
  for (const el of document.querySelectorAll('input[type=checkbox]')) {
    const box = el.getBoundingClientRect();
    if (box.width < 24 || box.height < 24) problems.push(`checkbox ${el.name} is ${box.width}x${box.height}px`);
  }
  return problems;
}"""


def test_every_page_fits_small_screens_reads_clearly_and_shows_the_crisis_line(live_server, page):
    shots = Path(os.environ["NURTURE_SHOTS_DIR"]) if os.environ.get("NURTURE_SHOTS_DIR") else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    problems: dict[str, list[str]] = {}

    def look(name: str) -> None:
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            found = page.evaluate(LAYOUT_PROBLEMS)
            # The short crisis line is on screen at the top of every page; the full one is in the footer.
            page.evaluate("window.scrollTo(0, 0)")
            expect(page.locator(".crisis-bar").get_by_role("link", name="988")).to_be_in_viewport()
            crisis = page.locator(".crisis")
            expect(crisis).to_be_visible()
            expect(crisis.get_by_role("link", name="988")).to_have_attribute("href", "tel:988")
            if width in AXE_WIDTHS:
                found += violations(page)
            if found:
                problems[f"{name}@{width}"] = found
            if shots:
                page.screenshot(path=shots / f"{name}-{width}.png", full_page=True)

    base = live_server.url
    page.goto(base + "/")
    look("signup")

    page.get_by_label("Email address").fill("lin@gmail.con")
    page.get_by_role("button", name="Send me the series").click()
    expect(page.get_by_role("alert")).to_be_visible()
    look("signup-error")

    page.get_by_label("Yes, email me").check()
    page.get_by_role("button", name="Send me the series").click()
    expect(page.get_by_role("alert")).to_contain_text("Did you mean")
    look("signup-typo")
    page.get_by_role("button", name="Yes, use lin@gmail.com").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    look("check-inbox")

    with live_server.runtime.sessions() as session:
        person = session.scalars(select(Subscriber)).one()
    tokens = live_server.runtime.tokens
    page.goto(f"{base}/confirm/{tokens.confirm(person.id, person.confirm_round, utcnow() - timedelta(hours=73))}")
    expect(page.get_by_role("heading", level=1)).to_have_text("This link has expired")
    look("expired")

    page.goto(f"{base}/confirm/{tokens.confirm(person.id, person.confirm_round, utcnow())}")
    look("confirm")
    page.get_by_role("button", name="Yes, confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you, you're subscribed")
    look("confirmed")

    page.goto(f"{base}/preferences/{tokens.unsubscribe(person.id)}")
    look("preferences")
    page.get_by_role("button", name="Stop the series, keep the newsletter").click()
    expect(page.get_by_role("status")).to_contain_text("The series is stopped")
    look("preferences-saved")

    page.goto(f"{base}/unsubscribe/{tokens.unsubscribe(person.id)}")
    look("unsubscribe")
    page.get_by_role("button", name="Stop everything").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    look("unsubscribed")
    page.goto(f"{base}/preferences/{tokens.unsubscribe(person.id)}")
    look("preferences-unsubscribed")

    page.goto(f"{base}/privacy")
    look("privacy")

    response = page.goto(f"{base}/no-such-page")
    assert response.status == 404
    look("not-found")

    live_server.wait_idle()
    assert problems == {}
