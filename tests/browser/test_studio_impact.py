"""The studio's impact panel in headless Chromium, over the hand-counted population of
tests/impact_population.py on a SQLite file: after an edit it says, per step, what changed and
whom it reaches (the same figures the integration test counts by hand), updates by itself when
another template is saved, and has no accessibility violations (axe-core)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from nurture.migrate import upgrade
from nurture.web.studio import create_studio_app

from browser.studio_server import serving_studio

from impact_population import NOW, build_population, checksum, edit

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/shots/issue-14")


@pytest.fixture
def population(tmp_path):
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    upgrade(url)
    rt, templates = build_population(tmp_path, url)
    yield rt, templates
    rt.close()


@pytest.fixture
def studio_url(population):
    rt, _ = population
    with serving_studio(create_studio_app(rt.settings, clock=lambda: NOW)) as url:
        yield url


def test_the_impact_panel_says_what_an_edit_does_and_follows_the_files(population, studio_url, new_page):
    from browser.axe import violations

    rt, templates = population
    how = templates / "nurture" / "20-how-it-may-work.html.j2"
    edit(how, 'subject: "Part 2: how it may work"', 'subject: "Part 2: how it may help"')
    edit(how, "{% block body %}", "{% block body %}\n<p>One new paragraph, written today.</p>")
    before = checksum(rt)

    page = new_page(viewport={"width": 1280, "height": 900})
    page.goto(studio_url + "/")
    page.get_by_role("link", name="Impact").click()
    expect(page).to_have_url(studio_url + "/impact")
    expect(page.locator("#live")).to_have_attribute("data-state", "on")
    expect(page.locator("#impact-headline")).to_have_text("Publishing the templates on disk: 2 changed, 2 unchanged.")
    step = page.locator('.impact-step[data-key="how-it-may-work"]')
    expect(step).to_have_attribute("data-kind", "changed")
    expect(step.locator(".impact-sentence")).to_have_text(
        "Step how-it-may-work changed (subject and body): 6 people will receive the new version over the next "
        "2 days, first tomorrow.")
    expect(page.locator('.impact-step[data-key="consultation-invite"] .impact-sentence')).to_contain_text(
        "13 more people will get it over the next 8 days, first on Friday 11 December")
    assert violations(page) == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "studio-impact-1280.png", full_page=True)

    # A new step saved while the panel is open: it updates by itself.
    (templates / "nurture" / "15-what-to-expect.html.j2").write_text(
        how.read_text(encoding="utf-8").replace("key: how-it-may-work", "key: what-to-expect")
        .replace("delay_days: 2", "delay_days: 1"), encoding="utf-8")
    new = page.locator('.impact-step[data-key="what-to-expect"]')
    expect(new).to_have_attribute("data-kind", "new", timeout=15000)
    expect(new).to_have_attribute("data-people", "6")
    assert violations(page) == []
    page.screenshot(path=SHOTS / "studio-impact-new-step-1280.png", full_page=True)

    page.set_viewport_size({"width": 375, "height": 900})
    assert violations(page) == []
    page.screenshot(path=SHOTS / "studio-impact-375.png", full_page=True)
    assert checksum(rt) == before, "the panel wrote to the database"
