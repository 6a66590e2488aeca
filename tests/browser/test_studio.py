"""nurture studio in headless Chromium against a live uvicorn server: the list, the preview, and the
page updating by itself (watchfiles -> /events -> the page fetches itself) when a template is broken on disk.

Uses the `browser` and `new_page` fixtures of tests/browser/conftest.py (Debian's chromium; skipped
where it is missing, failed when NURTURE_REQUIRE_BROWSER=1; console errors fail the test).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from nurture.content.sequences import scan_templates
from nurture.web.studio import create_studio_app

from browser.studio_server import serving_studio

from conftest import TEMPLATES, make_settings

pytestmark = pytest.mark.browser

MECHANISM = "nurture/20-how-it-may-work.html.j2"


@dataclass
class Studio:
    url: str
    templates: Path


@pytest.fixture
def studio(tmp_path):
    templates = tmp_path / "emails"
    shutil.copytree(TEMPLATES, templates)
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", templates_dir=str(templates))
    with serving_studio(create_studio_app(settings)) as url:
        yield Studio(url, templates)


def test_list_preview_and_live_validation(studio, new_page):
    # new_page comes after studio: its browser contexts close (ending the /events streams) before the server stops.
    page = new_page(viewport={"width": 1280, "height": 800})
    page.goto(studio.url + "/")
    sequences, newsletters, _ = scan_templates(studio.templates)
    expected = [s.subject for seq in sequences.values() for s in seq.steps] + [s.subject for s in newsletters.values()]
    expect(page.locator(".side .item .subject")).to_have_text(expected + ["Please confirm your subscription"])
    expect(page.locator(".side .item .key")).to_have_text(
        [s.key for seq in sequences.values() for s in seq.steps] + list(newsletters) + ["confirm"])
    expect(page.locator("#live")).to_have_attribute("data-state", "on")

    page.locator(".side .item", has_text="Part 2: how it may work").click()
    expect(page).to_have_url(f"{studio.url}/email/{MECHANISM}")
    expect(page.locator("#subject")).to_have_text("Part 2: how it may work")
    desktop = page.frame_locator("iframe[data-frame=desktop]")
    expect(desktop.locator("h1")).to_have_text("How ketamine may work")
    expect(page.frame_locator("iframe[data-frame=phone]").locator("h1")).to_have_text("How ketamine may work")
    assert page.locator("iframe[data-frame=phone]").evaluate("f => f.contentWindow.innerWidth") == 375
    assert page.locator("iframe[data-frame=desktop]").evaluate("f => f.contentWindow.innerWidth") == 600
    page.locator("#tab-text").click()
    expect(page.locator("#plain-text")).to_contain_text("Hi Alex,")
    page.locator("#tab-preview").click()

    # Break the open template on disk; the page must show the error by itself, without being reloaded.
    page.evaluate("window.notReloaded = true")
    path = studio.templates / MECHANISM
    source = path.read_text()
    line = next(n for n, text in enumerate(source.split("\n"), 1) if "<p>Hi {{ first_name }},</p>" in text)
    path.write_text(source.replace("<p>Hi {{ first_name }},</p>", "<p>Hi {{ first_name }}, {{ nope }}</p>", 1))
    expect(page.locator("#preview .alert")).to_contain_text(f"{MECHANISM}:{line}: 'nope' is undefined", timeout=8000)
    expect(page.locator("#badge")).to_contain_text("1 error")
    expect(page.locator(".side .item[aria-current] .flag")).to_have_text("1 error")
    page.locator("#tab-validation").click()
    expect(page.locator("#validation .problem.error .where")).to_have_text(f"{MECHANISM}:{line}")
    assert page.evaluate("window.notReloaded") is True

    # Fixed on disk: the error goes away, and the tab the reader had open stays open.
    path.write_text(source)
    expect(page.locator("#badge")).to_contain_text("All templates valid", timeout=8000)
    expect(page.locator("#validation")).to_be_visible()
    expect(page.locator("#validation")).to_contain_text("No problems in this email")
    assert page.evaluate("window.notReloaded") is True


def test_send_test_and_journey(studio, new_page):
    page = new_page(viewport={"width": 1280, "height": 800}, timezone_id="America/New_York")
    page.goto(f"{studio.url}/email/{MECHANISM}")
    page.fill("#send-to", "marketing@clinic.example")
    page.locator("#send button").click()
    expect(page.locator("#send-result")).to_contain_text("Test sent to marketing@clinic.example")
    assert len(list((studio.templates.parent / "outbox" / "new").iterdir())) == 1

    page.locator(".tabs-top a", has_text="Journey").click()
    page.evaluate("window.notReloaded = true")
    page.select_option("#zone", "America/New_York")  # the table follows the form, no Show click needed
    page.fill("#date", "2026-03-06")
    page.fill("#time", "10:00")
    expect(page).to_have_url(re.compile(r"zone=America%2FNew_York&date=2026-03-06&time=10%3A00"))
    expect(page.locator("tr[data-key=how-it-may-work] .when")).to_contain_text("Sunday, 2026-03-08 09:00 EDT")
    expect(page.locator("tr[data-key=welcome-history] .when")).to_contain_text("Friday, 2026-03-06 10:00 EST")
    assert page.evaluate("window.notReloaded") is True


SHOTS = Path("/tmp/shots/issue-12")


def test_previews_are_true_size_on_a_1024_px_screen(studio, new_page):
    """Beside the list, the pane of a 1024 px window cannot hold both frames side by side: the phone
    goes below the desktop, both at 100%, instead of both shrinking."""
    page = new_page(viewport={"width": 1024, "height": 800})
    page.goto(f"{studio.url}/email/{MECHANISM}")
    desktop, phone = page.locator("iframe[data-frame=desktop]"), page.locator("iframe[data-frame=phone]")
    expect(page.frame_locator("iframe[data-frame=phone]").locator("h1")).to_be_visible()
    assert page.locator("#devices").evaluate("d => d.style.zoom") in ("", "1")
    assert desktop.bounding_box()["width"] == 602  # 600 px and its 1 px border, unscaled
    assert phone.bounding_box()["width"] == 375 + 16  # 375 px and the 8 px phone frame
    assert phone.bounding_box()["y"] > desktop.bounding_box()["y"]  # below, not shrunk beside it
    expect(page.locator("#scale-note")).to_contain_text("Both at true size")


@pytest.mark.parametrize("width", [1280, 375])
def test_the_studio_pages_have_no_accessibility_violations(studio, new_page, width):
    from browser.axe import violations

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = new_page(viewport={"width": width, "height": 900})
    for name, path in (("overview", "/"), ("email", f"/email/{MECHANISM}"), ("journey", "/journey")):
        page.goto(studio.url + path)
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        assert violations(page) == [], (name, width)
        page.screenshot(path=SHOTS / f"studio-{name}-{width}.png")
    page.goto(f"{studio.url}/email/{MECHANISM}")
    for tab in ("#tab-text", "#tab-raw", "#tab-validation"):
        page.locator(tab).click()
        assert violations(page) == [], (tab, width)


def test_a_broken_template_shows_where_and_what_was_meant(studio, new_page):
    page = new_page(viewport={"width": 1280, "height": 900})
    path = studio.templates / MECHANISM
    source = path.read_text()
    line = next(n for n, text in enumerate(source.split("\n"), 1) if "{{ first_name }}" in text)
    path.write_text(source.replace("{{ first_name }}", "{{ frist_name }}", 1))
    page.goto(f"{studio.url}/email/{MECHANISM}")
    expect(page.locator("#preview .alert")).to_contain_text(
        f"{MECHANISM}:{line}: 'frist_name' is undefined: did you mean first_name?")
    page.screenshot(path=SHOTS / "studio-broken-1280.png")
