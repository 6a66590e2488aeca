"""The inline-once renderer against the slow path (Jinja + premailer per email)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from nurture.content.css_inlining import inline_css
from nurture.content.render_values import FIRST_NAME_FALLBACK, number_words, sample_recipient, when_phrase
from nurture.content.rendering import TEMPLATE_CONTEXT, Renderer, RenderError
from nurture.content.sequences import load_newsletters, load_sequences

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "emails"
CLINIC = {
    "name": "Harbor Psychiatry",
    "postal_address": "100 Example Street, Suite 200, Springfield, IL 62701, USA",
    "phone": "(555) 010-0199",
    "website_url": "https://clinic.example",
}
BASE = "https://mail.clinic.example"
NASTY = 'Zoë "Z" O\'Brien <&>'


def all_templates() -> list[str]:
    names = [s.template for seq in load_sequences(SHIPPED).values() for s in seq.steps]
    names += [s.template for s in load_newsletters(SHIPPED).values()]
    return names + ["system/confirm.html.j2"]


def nasty_recipient() -> dict[str, str]:
    return {
        "first_name": NASTY,
        "unsubscribe_url": f"{BASE}/unsubscribe/tok?a=1&b=\"q\"&n=Zoë O'B <x>",
        "preferences_url": f"{BASE}/preferences/tok'\"&amp;",
        "confirm_url": f"{BASE}/confirm/tok?n=Zoë",
    }


def tree(html: str):
    return etree.fromstring(html.strip(), etree.HTMLParser())


def assert_same_tree(a, b, path="") -> None:
    """Same tags, attributes, text and tails; styles and classes included."""
    here = f"{path}/{a.tag if isinstance(a.tag, str) else 'comment'}"
    assert a.tag == b.tag, here
    assert dict(a.attrib) == dict(b.attrib), here
    assert (a.text or "") == (b.text or ""), here
    assert (a.tail or "") == (b.tail or ""), here
    assert len(a) == len(b), here
    for x, y in zip(a, b):
        assert_same_tree(x, y, here)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(SHIPPED, clinic=CLINIC, base_url=BASE, year=2026)


@pytest.mark.parametrize("template", all_templates())
def test_cached_render_equals_jinja_plus_premailer(renderer: Renderer, template: str) -> None:
    recipient = nasty_recipient()
    fast = renderer.render(template, recipient)
    slow = renderer.render_reference(template, recipient)
    assert_same_tree(tree(fast.html), tree(slow.html))
    assert fast.text == slow.text
    assert fast.subject == slow.subject
    assert fast.preheader == slow.preheader


def test_values_are_escaped_in_text_and_attributes(renderer: Renderer) -> None:
    out = renderer.render("nurture/10-welcome-history.html.j2", nasty_recipient())
    root = tree(out.html)
    assert f"Hi {NASTY}," in [p.text for p in root.iter("p")]
    hrefs = [a.get("href") for a in root.iter("a")]
    # libxml2 %-escapes non-ASCII and spaces in href, exactly as in the slow path
    assert f"{BASE}/unsubscribe/tok?a=1&b=\"q\"&n=Zo%C3%AB%20O'B%20<x>" in hrefs
    assert f"Hi {NASTY}," in out.text
    assert "<script" not in out.html


def test_first_name_fallback(renderer: Renderer) -> None:
    recipient = sample_recipient(BASE)
    for missing in (None, "", "   "):
        recipient["first_name"] = missing
        out = renderer.render("nurture/10-welcome-history.html.j2", recipient)
        assert f"Hi {FIRST_NAME_FALLBACK}," in out.text
    del recipient["first_name"]
    assert f"Hi {FIRST_NAME_FALLBACK}," in renderer.render("nurture/10-welcome-history.html.j2", recipient).text


def test_values_cannot_break_lines(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    path = templates / "nurture" / "10-welcome-history.html.j2"
    path.write_text(path.read_text().replace("subject: Welcome,", "subject: Hi {{ first_name }}, welcome,"))
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE)
    out = renderer.render(
        "nurture/10-welcome-history.html.j2", {**sample_recipient(BASE), "first_name": "Al\r\nBcc: x@y\u2028z\x00"}
    )
    assert out.subject == "Hi Al Bcc: x@y z, welcome, and a little history"
    assert "\n" not in out.subject


def test_heading_underline_follows_the_value(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    path = templates / "nurture" / "10-welcome-history.html.j2"
    path.write_text(path.read_text().replace("<h1>Welcome, and", "<h1>{{ first_name }}, welcome, and"))
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE)
    for name in ("Al", "Bartholomew-Jones"):
        text = renderer.render("nurture/10-welcome-history.html.j2", {**sample_recipient(BASE), "first_name": name}).text
        heading = f"{name}, welcome, and where ketamine came from"
        assert f"{heading}\n{'=' * len(heading)}\n" in text


def test_media_queries_survive_inlining(renderer: Renderer) -> None:
    html = renderer.render("nurture/10-welcome-history.html.j2", sample_recipient(BASE)).html
    style = tree(html).find(".//style").text
    assert "@media" in style and "!important" in style
    assert 'style="' in html and "max-width:600px" in html


def test_inline_css_never_loads_stylesheets() -> None:
    html = '<html><head><link rel="stylesheet" href="https://cdn.example/x.css"></head><body><p>x</p></body></html>'
    assert "x</p>" in inline_css(html)  # no network attempt, no exception


def test_edits_are_picked_up(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE, recheck_seconds=0)
    name = "nurture/20-how-it-may-work.html.j2"
    assert "Glutamate, the messenger" not in renderer.render(name, sample_recipient(BASE)).text
    path = templates / name
    path.write_text(path.read_text().replace("Glutamate</h2>", "Glutamate, the messenger</h2>"))
    assert "Glutamate, the messenger" in renderer.render(name, sample_recipient(BASE)).text
    layout = templates / "layout.html.j2"
    layout.write_text(layout.read_text().replace("Email preferences</a>", "Your preferences</a>"))
    assert "Your preferences" in renderer.render(name, sample_recipient(BASE)).text
    # A new step changes "Email 2 of 4" to "of 5".
    (templates / "nurture" / "45-extra.html.j2").write_text(
        "---\nkey: extra\nsubject: Extra\ndelay_days: 9\n---\n{% extends 'layout.html.j2' %}{% block body %}x{% endblock %}\n"
    )
    assert "Email 2 of 5" in renderer.render(name, sample_recipient(BASE)).text


def test_inlining_runs_once_per_template_version(renderer: Renderer, monkeypatch: pytest.MonkeyPatch) -> None:
    import nurture.content.rendering as rendering

    calls = []
    real = rendering.inline_css
    monkeypatch.setattr(rendering, "inline_css", lambda html: calls.append(1) or real(html))
    for i in range(5):
        renderer.render("nurture/10-welcome-history.html.j2", {**sample_recipient(BASE), "first_name": f"N{i}"})
    assert len(calls) == 1


def test_confirm_needs_confirm_url(renderer: Renderer) -> None:
    with pytest.raises(RenderError, match="confirm_url"):
        renderer.render("system/confirm.html.j2", {"first_name": "A"})
    out = renderer.render("system/confirm.html.j2", {"confirm_url": f"{BASE}/confirm/t"})
    assert f"{BASE}/confirm/t" in out.text and f'href="{BASE}/confirm/t"' in out.html


def test_recipient_value_in_a_condition_is_refused(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    path = templates / "nurture" / "10-welcome-history.html.j2"
    path.write_text(path.read_text().replace("<p>Hi {{ first_name }},</p>", "{% if first_name %}<p>Hi</p>{% endif %}"))
    with pytest.raises(RenderError, match=r"10-welcome-history.html.j2:10: .*only be output"):
        Renderer(templates, clinic=CLINIC, base_url=BASE).render("nurture/10-welcome-history.html.j2", sample_recipient(BASE))


def test_recipient_value_through_a_filter_is_refused(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    path = templates / "nurture" / "10-welcome-history.html.j2"
    path.write_text(path.read_text().replace("Hi {{ first_name }},", "Hi {{ first_name|upper }},"))
    with pytest.raises(RenderError, match="filter"):
        Renderer(templates, clinic=CLINIC, base_url=BASE).render("nurture/10-welcome-history.html.j2", sample_recipient(BASE))


def test_context_table_lists_every_variable() -> None:
    names = {v.name for v in TEMPLATE_CONTEXT}
    assert {"first_name", "unsubscribe_url", "preferences_url", "confirm_url", "clinic.postal_address", "year"} <= names
    import nurture.content.rendering as rendering

    for name in names:
        assert name in rendering.__doc__


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    path = templates / "nurture" / "10-welcome-history.html.j2"
    path.write_text(path.read_text().replace("<p>Hi {{ first_name }},</p>", "{{ clinic.__class__.__mro__ }}"))
    with pytest.raises(RenderError):
        Renderer(templates, clinic=CLINIC, base_url=BASE).render("nurture/10-welcome-history.html.j2", sample_recipient(BASE))


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1, max_codepoint=0x2FFFF), max_size=20
)


@settings(max_examples=40, deadline=None, suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(first_name=names, token=names)
def test_equivalence_for_arbitrary_values(renderer: Renderer, first_name: str, token: str) -> None:
    recipient = {**sample_recipient(BASE), "first_name": first_name, "unsubscribe_url": f"{BASE}/u/{token}"}
    fast = renderer.render("newsletter/2026-12-winter.html.j2", recipient)
    slow = renderer.render_reference("newsletter/2026-12-winter.html.j2", recipient)
    assert_same_tree(tree(fast.html), tree(slow.html))
    assert fast.text == slow.text


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(SHIPPED, target)
    return target


def test_recipient_urls_must_be_http(renderer: Renderer) -> None:
    with pytest.raises(ValueError, match="unsubscribe_url must be an http"):
        renderer.render("nurture/10-welcome-history.html.j2", {**sample_recipient(BASE), "unsubscribe_url": "javascript:alert(1)"})


def test_touching_a_file_without_changing_it_costs_no_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import nurture.content.rendering as rendering

    templates = copy_templates(tmp_path)
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE)
    calls = []
    real = rendering.inline_css
    monkeypatch.setattr(rendering, "inline_css", lambda html: calls.append(1) or real(html))
    renderer.render("nurture/10-welcome-history.html.j2", sample_recipient(BASE))
    os.utime(templates / "layout.html.j2", ns=(1, 1))
    renderer.render("nurture/10-welcome-history.html.j2", sample_recipient(BASE))
    assert len(calls) == 1


def test_clinic_may_be_an_object() -> None:
    class ClinicInfo:
        name = "Object Clinic"
        postal_address = "2 Object Road, Objectville"
        phone = "555"
        website_url = "https://object.example"

    out = Renderer(SHIPPED, clinic=ClinicInfo(), base_url=BASE).render(
        "nurture/40-consultation-invite.html.j2", sample_recipient(BASE)
    )
    assert "2 Object Road, Objectville" in out.text
    assert "Book a consultation: https://object.example/consultation" in out.text


# --------------------------------------------------------------------------- step.total, step.next, words

WELCOME = "nurture/10-welcome-history.html.j2"
INVITE = "nurture/40-consultation-invite.html.j2"


def body_text(text: str) -> str:
    """The text part above the footer (the footer's off-label line names esketamine in every email)."""
    return text.split("Warm regards,")[0]


def test_step_next_is_the_following_step_with_its_delay(renderer: Renderer) -> None:
    step = renderer.context(WELCOME, sample_recipient(BASE))["step"]
    assert (step["number"], step["total"]) == (1, 4)
    nxt = step["next"]
    assert (nxt["key"], nxt["number"], nxt["subject"], nxt["days"], nxt["when"]) == (
        "how-it-may-work", 2, "Part 2: how it may work", 2, "in two days")
    assert nxt["preheader"] == "What researchers think happens in the brain, and what is still unknown."
    assert renderer.context("nurture/30-risks-side-effects.html.j2", sample_recipient(BASE))["step"]["next"]["when"] == "in three days"
    for last in (INVITE, "newsletter/2026-12-winter.html.j2", "system/confirm.html.j2"):
        assert renderer.context(last, sample_recipient(BASE))["step"]["next"] is None


def test_shipped_steps_say_what_comes_next(renderer: Renderer) -> None:
    text = renderer.render(WELCOME, sample_recipient(BASE)).text
    assert "four short emails" in text
    assert "Coming in two days: “Part 2: how it may work”\nWhat researchers think happens in the brain" in text
    assert "This is the last of our four emails in this series." in renderer.render(INVITE, sample_recipient(BASE)).text


def test_a_new_step_changes_the_count_and_what_comes_next(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    (templates / "nurture" / "50-follow-up.html.j2").write_text(
        "---\nkey: follow-up\nsubject: \"Part 5: a follow-up\"\npreheader: One more thing.\ndelay_days: 15\n---\n"
        "{% extends 'layout.html.j2' %}{% block body %}<p>x</p>{% include 'nurture/_whats-next.j2' %}{% endblock %}\n"
    )
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE)
    assert "five short emails" in renderer.render(WELCOME, sample_recipient(BASE)).text
    invite = renderer.render(INVITE, sample_recipient(BASE)).text
    assert "Coming in a week: “Part 5: a follow-up”\nOne more thing." in invite
    assert "This is the last" not in invite
    assert "This is the last of our five emails" in renderer.render("nurture/50-follow-up.html.j2", sample_recipient(BASE)).text


def test_the_next_subject_carries_recipient_values_like_any_subject(tmp_path: Path) -> None:
    templates = copy_templates(tmp_path)
    path = templates / "nurture" / "20-how-it-may-work.html.j2"
    path.write_text(path.read_text().replace('subject: "Part 2: how it may work"', 'subject: "{{ first_name }}, part {{ step.number }}"'))
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE)
    out = renderer.render(WELCOME, {**sample_recipient(BASE), "first_name": "Zoë <b>"})
    assert "Coming in two days: “Zoë <b>, part 2”" in out.text  # its own number, not the welcome's
    assert "“Zoë &lt;b&gt;, part 2”" in out.html
    slow = renderer.render_reference(WELCOME, {**sample_recipient(BASE), "first_name": "Zoë <b>"})
    assert out.text == slow.text


@pytest.mark.parametrize(("number", "words"), [(0, "zero"), (4, "four"), (12, "twelve"), (20, "twenty"), (21, "21"), (-1, "-1")])
def test_number_words(number: int, words: str) -> None:
    assert number_words(number) == words


@pytest.mark.parametrize(("days", "phrase"), [(0, "soon"), (1, "tomorrow"), (2, "in two days"), (7, "in a week"),
                                              (14, "in two weeks"), (10, "in ten days"), (30, "in 30 days")])
def test_when_phrase(days: int, phrase: str) -> None:
    assert when_phrase(days) == phrase


def test_esketamine_is_offered_only_by_a_certified_center() -> None:
    default = body_text(Renderer(SHIPPED, clinic=CLINIC, base_url=BASE).render(INVITE, sample_recipient(BASE)).text)
    assert "esketamine" not in default.lower() and "IV drip" in default
    for flag in (False, "false", None):
        off = Renderer(SHIPPED, clinic={**CLINIC, "esketamine_certified": flag}, base_url=BASE)
        assert "esketamine" not in body_text(off.render(INVITE, sample_recipient(BASE)).text).lower()
    on = body_text(Renderer(SHIPPED, clinic={**CLINIC, "esketamine_certified": True}, base_url=BASE)
                   .render(INVITE, sample_recipient(BASE)).text)
    assert "certified treatment center for esketamine (Spravato)" in on
    assert "at least two hours after esketamine" in on


@pytest.mark.parametrize(("form", "says"), [
    ("either", "in person at our clinic or as a secure video call (telehealth)"),
    ("telehealth", "The consultation is a secure video call (telehealth)"),
    ("in-person", f"The consultation is in person, at our clinic: {CLINIC['postal_address']}."),
])
def test_consultation_format_cost_and_insurance_come_from_the_clinic(form: str, says: str) -> None:
    clinic = {**CLINIC, "consultation_format": form, "cost": "A consultation costs $250.", "insurance": "We bill Aetna."}
    text = Renderer(SHIPPED, clinic=clinic, base_url=BASE).render(INVITE, sample_recipient(BASE)).text
    assert says in text
    assert "Cost and insurance\n------------------\n\nA consultation costs $250.\n\nWe bill Aetna." in text


def test_cost_and_insurance_default_to_honest_placeholders() -> None:
    from nurture.config import DEFAULT_COST_TEXT, DEFAULT_INSURANCE_TEXT

    text = Renderer(SHIPPED, clinic=CLINIC, base_url=BASE).render(INVITE, sample_recipient(BASE)).text
    assert DEFAULT_COST_TEXT in text and DEFAULT_INSURANCE_TEXT in text
    assert "$" not in body_text(text)  # no price the clinic has not set


def test_the_property_test_keeps_the_ci_profile() -> None:
    """A test's own @settings replaces the profile's health-check list: too_slow must stay suppressed."""
    from hypothesis import settings as current

    chosen = test_equivalence_for_arbitrary_values._hypothesis_internal_use_settings  # type: ignore[attr-defined]
    assert HealthCheck.too_slow in current.default.suppress_health_check
    assert HealthCheck.too_slow in chosen.suppress_health_check and chosen.deadline is None


def test_the_year_is_the_callers_clock(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    templates = copy_templates(tmp_path)
    layout = templates / "layout.html.j2"
    layout.write_text(layout.read_text().replace("{{ clinic.postal_address }}", "{{ clinic.postal_address }} &copy; {{ year }}", 1))
    now = [datetime(2030, 12, 31, 23, 59, tzinfo=timezone.utc)]
    renderer = Renderer(templates, clinic=CLINIC, base_url=BASE, clock=lambda: now[0], recheck_seconds=3600)
    assert "© 2030" in renderer.render("nurture/10-welcome-history.html.j2", sample_recipient(BASE)).text
    now[0] = datetime(2031, 1, 1, 0, 1, tzinfo=timezone.utc)
    assert "© 2031" in renderer.render("nurture/10-welcome-history.html.j2", sample_recipient(BASE)).text
    fixed = Renderer(templates, clinic=CLINIC, base_url=BASE, year=1999, clock=lambda: now[0])
    assert "© 1999" in fixed.render("nurture/10-welcome-history.html.j2", sample_recipient(BASE)).text
