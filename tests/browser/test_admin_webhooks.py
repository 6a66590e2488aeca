"""The dashboard's webhooks panel in a real browser: an active endpoint, a paused one with a long
URL and a long failure reason, and the delivery log; no axe-core violations and nothing
overflowing at 1280 and 375 px."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from nurture.db import transaction
from nurture.models import Subscriber
from nurture.people import webhook_endpoints
from nurture.people.webhook_delivery import Answer, Deliverer
from nurture.people.webhook_events import emit

import reports_scene
from .test_admin import PASSWORD, SHOTS, _serve
from .test_page_layout import LAYOUT_PROBLEMS

pytestmark = pytest.mark.browser

LONG_URL = "https://automation.clearwater-psychiatry.example/webhook/5f1c2a9e-4b7d-4e0a-9c3f-8d2b6a1e7f40/nurture-events"


def _with_webhooks(sessions) -> None:
    reports_scene.build(sessions)
    now = reports_scene.NOW
    with transaction(sessions) as session:
        webhook_endpoints.add(session, "https://crm.example/hooks", "confirmed,unsubscribed,goal", now=now,
                              production=True)
        webhook_endpoints.add(session, LONG_URL, "subscribed,confirmed,unsubscribed,bounced,complained,clicked,goal",
                              now=now, production=True)
        for sid in session.scalars(select(Subscriber.id).limit(3)):
            emit(session, "confirmed", now=now - timedelta(days=2), subscriber_id=sid)

    def answer(url, body, headers, timeout):
        if url == LONG_URL:
            return Answer(None, "cannot connect: [Errno 111] Connection refused by the automation server behind "
                                "the load balancer")
        return Answer(200, "HTTP 200")

    clock = [now - timedelta(days=2)]
    deliverer = Deliverer(sessions, clock=lambda: clock[0], post=answer)
    while clock[0] <= now:
        deliverer.run()
        clock[0] += timedelta(hours=1)


@pytest.fixture(scope="module")
def webhooks_server(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("webhooks"), _with_webhooks)


@pytest.mark.parametrize("width", [1280, 375])
def test_the_webhooks_panel_is_accessible_and_fits(webhooks_server, new_page, width):
    from browser.axe import violations

    url, _runtime = webhooks_server
    page = new_page(http_credentials={"username": "admin", "password": PASSWORD},
                    viewport={"width": width, "height": 900})
    page.goto(f"{url}/admin")
    panel = page.locator("section[aria-labelledby=webhooks-heading]")
    expect(panel).to_contain_text("paused")
    expect(panel).to_contain_text("nurture webhooks resume 2")
    expect(panel.locator("table").nth(1)).to_contain_text("delivered")
    page.wait_for_load_state("load")
    assert violations(page) == []
    problems = page.evaluate(LAYOUT_PROBLEMS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    panel.screenshot(path=str(SHOTS / f"admin-webhooks-{width}.png"))
    assert problems == [], "\n".join(problems)
