"""The whole journey in a real browser: sign up, confirm from the email, unsubscribe from the email.

The server is real (uvicorn, SQLite file, Maildir outbox) and so is the browser (Debian's chromium),
so this covers what the TestClient cannot: the line of JavaScript that sends the time zone, labels,
keyboard use, and links in the emails leading back to working pages.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from nurture.models import Status, Subscriber

pytestmark = pytest.mark.browser


def subscriber(live_server, address: str) -> Subscriber:
    with live_server.runtime.sessions() as session:
        return session.scalars(select(Subscriber).where(Subscriber.email == address)).one()


def link_in(message, url: str, path: str) -> str:
    text = message.get_body(("plain",)).get_content()
    match = re.search(re.escape(url) + "/" + path + r"/[A-Za-z0-9_.\-]+", text)
    assert match, f"no {path} link to {url} in:\n{text}"
    return match.group(0)


def sign_up(page, live_server, address: str, first_name: str) -> None:
    """The signup form, filled in and sent as a person would."""
    page.goto(live_server.url + "/")
    page.get_by_label("Email address").fill(address)
    page.get_by_label("First name").fill(first_name)
    page.get_by_label("Yes, email me").check()
    page.get_by_role("button", name="Send me the series").click()


def test_sign_up_confirm_from_the_email_then_unsubscribe_from_the_welcome_email(live_server, new_page):
    page = new_page(timezone_id="Asia/Tokyo", locale="en-US")
    sign_up(page, live_server, "ada@example.com", "Ada")
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")

    person = subscriber(live_server, "ada@example.com")
    assert (person.status, person.first_name, person.timezone) == (Status.pending, "Ada", "Asia/Tokyo")

    # The confirmation email: its link opens a page that only shows a button (mail scanners fetch links).
    [confirmation] = live_server.wait_for_mail(1)
    assert confirmation["To"] == "ada@example.com"
    page.goto(link_in(confirmation, live_server.url, "confirm"))
    confirm_button = page.get_by_role("button", name="Yes, confirm my subscription")
    expect(confirm_button).to_be_visible()
    assert subscriber(live_server, "ada@example.com").status is Status.pending
    confirm_button.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you, you're subscribed")
    assert subscriber(live_server, "ada@example.com").status is Status.confirmed

    # The welcome step follows at once; its unsubscribe link works in one click.
    messages = live_server.wait_for_mail(2)
    [welcome] = [m for m in messages if m["List-Unsubscribe"]]
    unsubscribe_url = link_in(welcome, live_server.url, "unsubscribe")
    assert unsubscribe_url in welcome["List-Unsubscribe"]
    page.goto(unsubscribe_url)
    page.get_by_role("button", name="Stop everything").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    assert subscriber(live_server, "ada@example.com").status is Status.unsubscribed


def focused_id(page) -> str:
    return page.evaluate("document.activeElement && (document.activeElement.id || document.activeElement.tagName)")


def test_without_consent_the_error_is_announced_the_email_kept_and_the_keyboard_suffices(live_server, page):
    page.goto(live_server.url + "/")
    # Keyboard only: the skip link first, the crisis line's number, then the fields in reading order.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "tel:988"
    page.keyboard.press("Tab")
    assert focused_id(page) == "email"
    page.keyboard.type("grace@example.com")
    page.keyboard.press("Tab")
    assert focused_id(page) == "first_name"
    page.keyboard.type("Grace")
    page.keyboard.press("Tab")
    assert focused_id(page) == "consent"
    page.keyboard.press("Tab")  # leave consent unticked
    assert page.evaluate("document.activeElement.textContent.trim()") == "Send me the series"
    page.keyboard.press("Enter")

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Please tick the box")
    expect(page.get_by_label("Email address")).to_have_value("grace@example.com")
    expect(page.get_by_label("First name")).to_have_value("Grace")
    consent = page.get_by_label("Yes, email me")
    expect(consent).to_have_attribute("aria-invalid", "true")
    # Focus lands on the field to fix, and the field points at the message that explains it.
    assert focused_id(page) == "consent"
    assert "form-error" in consent.get_attribute("aria-describedby").split()
    with live_server.runtime.sessions() as session:
        assert session.scalars(select(Subscriber)).all() == []

    page.keyboard.press("Space")
    expect(consent).to_be_checked()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    assert subscriber(live_server, "grace@example.com").status is Status.pending


def test_signup_page_structure_labels_heading_and_honeypot(live_server, page):
    page.goto(live_server.url + "/")
    assert page.get_attribute("html", "lang") == "en"
    expect(page.locator("h1")).to_have_count(1)
    expect(page.get_by_role("main")).to_have_count(1)
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(el => !el.labels || el.labels.length === 0 || ![...el.labels].some(l => l.textContent.trim()))
        .map(el => el.name)""")
    assert unlabelled == []

    # The honeypot: off screen and out of the tab order, so people never meet it.
    honeypot = page.locator("#website")
    assert honeypot.get_attribute("tabindex") == "-1"
    box = honeypot.bounding_box()
    assert box is None or box["x"] + box["width"] <= 0
    seen = []
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.append(focused_id(page))
    assert "website" not in seen
    assert {"email", "first_name", "consent"} <= set(seen)

    # No requests leave the site: no CDN, no web fonts.
    assert page.evaluate("""() => performance.getEntriesByType('resource')
        .filter(e => !e.name.startsWith(location.origin)).map(e => e.name)""") == []


def test_the_result_page_echoes_the_address_lets_it_be_corrected_and_a_reload_signs_up_nobody(live_server, page):
    sign_up(page, live_server, "mo@exmaple.com", "Mo")
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    expect(page.locator("main")).to_contain_text("If mo@exmaple.com can receive our emails")
    # POST/redirect/GET: the address is not in the URL, and a reload sends no second signup.
    assert page.url == live_server.url + "/check-inbox"
    live_server.wait_for_mail(1)
    page.reload()
    expect(page.locator("main")).to_contain_text("mo@exmaple.com")
    live_server.wait_idle()
    assert len(live_server.mails()) == 1
    expect(page.locator("main")).to_contain_text(re.compile(r"You can ask for a new link from \d{1,2}:\d\d [AP]M\."))

    # The typo is seen: "Correct it" brings the form back as it was sent, focus on the address.
    page.get_by_role("link", name="Correct it").click()
    email = page.get_by_label("Email address")
    expect(email).to_have_value("mo@exmaple.com")
    expect(email).to_be_focused()
    expect(page.get_by_label("First name")).to_have_value("Mo")
    expect(page.get_by_label("Yes, email me")).to_be_checked()
    email.fill("mo@example.com")
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_contain_text("If mo@example.com can receive our emails")
    # (Dates have whole seconds, so the two may sort either way.)
    assert sorted(m["To"] for m in live_server.wait_for_mail(2)) == ["mo@example.com", "mo@exmaple.com"]


def test_a_mistyped_common_domain_is_offered_a_fix_with_the_keyboard(live_server, page):
    page.goto(live_server.url + "/")
    page.get_by_label("Email address").fill("jo@hotmial.com")
    page.get_by_label("Yes, email me").check()
    page.get_by_role("button", name="Send me the series").click()
    suggestion = page.get_by_role("alert")
    expect(suggestion).to_contain_text("Did you mean jo@hotmail.com?")
    expect(suggestion).to_be_focused()  # announced and reached first
    expect(page.get_by_label("Yes, email me")).to_be_checked()
    with live_server.runtime.sessions() as session:
        assert session.scalars(select(Subscriber)).all() == []  # nothing stored before the choice
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Yes, use jo@hotmail.com"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "No, keep what I typed"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_contain_text("If jo@hotmail.com can receive our emails")
    assert subscriber(live_server, "jo@hotmail.com").status is Status.pending
