"""The /admin dashboard in a real browser: sign in with basic auth, the charts drawn, the figures
equal to the database's, a subscriber's timeline, and the layout at 1280, 600 and 375 px.

Screenshots go to /tmp/nurture-shots/admin/ (or $NURTURE_SHOTS_DIR/admin) to look at; with
NURTURE_UPDATE_DOCS=1 the 1280 px one is also saved as docs/admin.png for the README.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect
from sqlalchemy import func, select

from nurture.content.sequences import load_sequences
from nurture.feedback import funnel_figures
from nurture.migrate import upgrade
from nurture.models import OutboxMessage, Subscriber
from nurture.runtime import Runtime
from nurture.web import create_app
from nurture.web.admin import mount_admin

import reports_scene
from .conftest import _free_socket, _wait_until_healthy
from .test_page_layout import LAYOUT_PROBLEMS
from conftest import make_settings

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("NURTURE_SHOTS_DIR", "/tmp/nurture-shots")) / "admin"


def _serve(tmp: Path, build, **settings):
    """A live server with the dashboard on, data from ``build``, and a clock frozen at the data's 'now'."""
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    database_url = f"sqlite:///{tmp / 'subscribers.db'}"
    upgrade(database_url)
    runtime = Runtime(make_settings(tmp, database_url, base_url=url, admin_password=PASSWORD, **settings))
    build(runtime.sessions)
    clock = lambda: reports_scene.NOW  # noqa: E731
    app = create_app(runtime, dispatch=False, clock=clock)
    if not any(getattr(route, "path", None) == "/admin" for route in app.routes):  # until app.py mounts it
        mount_admin(app, runtime, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_until_healthy(url, thread)
        yield url, runtime
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        runtime.close()


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory):
    """The small hand-counted history (tests/reports_scene.py)."""
    yield from _serve(tmp_path_factory.mktemp("admin"), reports_scene.build)


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    """Two plausible months, a few hundred people: what the layout has to hold."""
    yield from _serve(tmp_path_factory.mktemp("busy"), reports_scene.demo)


FIGURES = """() => {
  const found = {};
  for (const el of document.querySelectorAll('[data-figure]')) {
    (found[el.dataset.figure] ||= new Set()).add(el.textContent.trim().replace(/,/g, ''));
  }
  return Object.fromEntries(Object.entries(found).map(([k, v]) => [k, [...v]]));
}"""


def test_signed_in_the_dashboard_shows_the_databases_figures(admin_server, new_page):
    url, runtime = admin_server
    page = new_page(http_credentials={"username": "admin", "password": PASSWORD}, viewport={"width": 1280, "height": 900})
    response = page.goto(f"{url}/admin")
    assert response.status == 200

    chart = page.locator("ol.funnel svg.stage-bar").first
    expect(chart).to_be_visible()
    assert page.locator("ol.funnel .stage-bar rect.fill").count() >= 6  # signups, confirmed, 4 steps, goal
    expect(page.locator("svg.daily")).to_be_visible()
    assert page.locator("svg.daily rect").count() == 30

    sequence = load_sequences(runtime.settings.templates_dir)["nurture"]
    with runtime.sessions() as session:
        funnel = funnel_figures.funnel(session, since=None, sequence=sequence,
                                consultation_url=runtime.settings.consultation_url)
        people = session.scalar(select(func.count()).select_from(Subscriber))
        first_sent = session.scalar(select(func.count()).where(
            OutboxMessage.key == "seq:nurture:welcome-history", OutboxMessage.sent_at.is_not(None)))
    shown = page.evaluate(FIGURES)
    assert all(len(values) == 1 for values in shown.values()), shown  # the chart and the tables agree
    shown = {k: int(v[0]) for k, v in shown.items()}
    assert shown["signups"] == funnel.signups == people
    assert shown["confirmed"] == funnel.confirmed and shown["goal"] == funnel.goal
    assert shown["step:welcome-history:sent"] == funnel.steps[0].sent == first_sent
    # The hand-counted history: every step's sent, not yet due and stopped (tests/reports_scene.py).
    for key, expected in reports_scene.EXPECTED_ALL["steps"].items():
        for name in ("sent", "not_yet_due", "stopped", "unsubscribed", "bounced", "goal_clickers"):
            assert shown[f"step:{key}:{name}"] == expected[name], (key, name)
    # Only the invitation has a link of its own: the others say so instead of "0 clicked (0%)".
    assert shown["step:consultation-invite:clickers"] == reports_scene.EXPECTED_ALL["steps"]["consultation-invite"]["clickers"]
    for key in ("welcome-history", "how-it-may-work", "risks-side-effects"):
        assert f"step:{key}:clickers" not in shown
        expect(page.locator(f"[data-no-links='{key}']")).to_have_text("no links of its own")
    expect(page.locator("ol.funnel .stage-step").nth(1)).to_contain_text("2 not yet due · 3 stopped")

    # A week: the cohort shrinks to the week's signups.
    page.get_by_role("link", name="7 days").click()
    expect(page.locator(".tile [data-figure=signups]")).to_have_text(str(reports_scene.EXPECTED_SINCE["signups"]))

    # Search from a link in the deliveries list, then by typing.
    page.locator("#recent-heading ~ table a", has_text="c@example.com").first.click()
    expect(page.locator("#timeline-heading")).to_contain_text("c@example.com")
    expect(page.locator(".timeline")).to_contain_text("seq:nurture:welcome-history · sent")
    expect(page.locator(".timeline .next")).to_contain_text("the address bounced")
    page.get_by_label("Find a subscriber").fill("Nobody@Example.com")
    page.get_by_role("button", name="Show timeline").click()
    expect(page.get_by_role("alert")).to_have_text("No subscriber has the address nobody@example.com.")


def test_without_credentials_the_browser_gets_no_dashboard(admin_server, new_page):
    url, _ = admin_server
    # Headless Chromium cannot show the sign-in prompt, so navigation fails outright; the page's
    # own request context shows what the server answered.
    page = new_page()
    response = page.request.get(f"{url}/admin")
    assert response.status == 401 and response.headers["www-authenticate"].startswith("Basic ")
    assert "data-figure" not in response.text()
    wrong = new_page(http_credentials={"username": "admin", "password": "nope"}).request.get(f"{url}/admin")
    assert wrong.status == 401


@pytest.mark.parametrize("width", [1280, 600, 375])
def test_layout_at_each_width(busy_server, new_page, width):
    url, runtime = busy_server
    with runtime.sessions() as session:
        someone = session.scalar(select(Subscriber.email).where(Subscriber.status == "confirmed")
                                 .order_by(Subscriber.created_at.desc()).limit(1))
    page = new_page(http_credentials={"username": "admin", "password": PASSWORD},
                    viewport={"width": width, "height": 900})
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{url}/admin")
    expect(page.locator("ol.funnel")).to_be_visible()
    problems = page.evaluate(LAYOUT_PROBLEMS)
    page.screenshot(path=str(SHOTS / f"admin-{width}.png"), full_page=True)
    if width == 1280:
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.screenshot(path=str(SHOTS / "admin-1280-top.png"))
        if os.environ.get("NURTURE_UPDATE_DOCS") == "1":
            page.screenshot(path=str(ROOT / "docs" / "admin.png"))
    page.get_by_label("Find a subscriber").fill(someone)
    page.get_by_role("button", name="Show timeline").click()
    expect(page.locator(".timeline")).to_be_visible()
    page.wait_for_load_state("load")  # the stylesheet too, before measuring
    problems += page.evaluate(LAYOUT_PROBLEMS)
    page.screenshot(path=str(SHOTS / f"admin-{width}-search.png"), full_page=True)
    assert problems == [], "\n".join(problems)


ISSUE_SHOTS = Path("/tmp/shots/issue-12")


@pytest.mark.parametrize("width", [1280, 375])
def test_no_accessibility_violations_and_the_phone_call_actions(admin_server, new_page, width):
    """axe-core finds nothing on the dashboard, a timeline, or after an action; the clinic resends
    a confirmation to someone who never got it, from the page, as a person would."""
    from browser.axe import violations

    url, runtime = admin_server
    ISSUE_SHOTS.mkdir(parents=True, exist_ok=True)
    page = new_page(http_credentials={"username": "admin", "password": PASSWORD}, viewport={"width": width, "height": 900})
    page.goto(f"{url}/admin")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mailing dashboard")
    assert violations(page) == []
    page.screenshot(path=ISSUE_SHOTS / f"admin-{width}.png", full_page=True)
    page.screenshot(path=ISSUE_SHOTS / f"admin-{width}-top.png")
    page.locator("#steps-heading").scroll_into_view_if_needed()
    page.screenshot(path=ISSUE_SHOTS / f"admin-{width}-steps.png")
    page.get_by_label("Find a subscriber").fill("e@example.com")  # signed up two days ago, never confirmed
    page.get_by_role("button", name="Show timeline").click()
    expect(page.locator(".timeline .next")).to_contain_text("have not confirmed their address yet")
    assert violations(page) == []
    page.screenshot(path=ISSUE_SHOTS / f"admin-{width}-person.png")
    if width == 375:
        return  # one resend is enough; the second width checks the layout and axe only
    page.get_by_role("button", name="Resend the confirmation email").click()
    expect(page.get_by_role("status").filter(has_text="confirmation")).to_contain_text(
        "A new confirmation email is on its way")
    expect(page.locator(".timeline")).to_contain_text("consent resend-confirm")
    expect(page.locator(".timeline")).to_contain_text("via admin:admin")
    assert violations(page) == []
    page.screenshot(path=ISSUE_SHOTS / f"admin-{width}-action.png", full_page=True)


def _broken_history(sessions, templates: Path):
    """Someone whose welcome email could not be rendered, as the sender records it (the absolute path)."""
    from datetime import timedelta

    from nurture.db import transaction
    from nurture.models import OutboxState

    from factories import confirmed

    who = confirmed(sessions, "ann@example.com", reports_scene.NOW - timedelta(hours=1))
    with transaction(sessions) as session:
        session.add(OutboxMessage(
            subscriber_id=who, key="seq:nurture:welcome-history", template="nurture/10-welcome-history.html.j2",
            state=OutboxState.retry, due_at=reports_scene.NOW + timedelta(minutes=15),
            created_at=reports_scene.NOW - timedelta(hours=1), attempts=1, unknowns=0,
            last_error=f"render error: RenderError: {templates}/nurture/10-welcome-history.html.j2:10: "
                       "'frist_name' is undefined"))


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory):
    import shutil

    from conftest import TEMPLATES

    tmp = tmp_path_factory.mktemp("broken")
    templates = tmp / "emails"
    shutil.copytree(TEMPLATES, templates)
    welcome = templates / "nurture" / "10-welcome-history.html.j2"
    welcome.write_text(welcome.read_text().replace("{{ first_name }}", "{{ frist_name }}"))

    yield from _serve(tmp, lambda sessions: _broken_history(sessions, templates), templates_dir=str(templates))


@pytest.mark.parametrize("width", [1280, 375])
def test_a_broken_template_is_a_banner_first_on_the_page(broken_server, new_page, width):
    from browser.axe import violations

    url, _ = broken_server
    page = new_page(http_credentials={"username": "admin", "password": PASSWORD}, viewport={"width": width, "height": 900})
    page.goto(f"{url}/admin")
    banner = page.get_by_role("alert").filter(has_text="cannot be rendered")
    expect(banner).to_contain_text("nurture/10-welcome-history.html.j2:10: 'frist_name' is undefined")
    expect(banner).to_contain_text("1 message held")
    assert banner.bounding_box()["y"] < 200  # at the top, not below the fold
    assert violations(page) == []
    page.screenshot(path=ISSUE_SHOTS / f"admin-broken-{width}.png")
