"""One test per kind of template mistake: copy the shipped templates, break one thing, expect one problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nurture.template_checks import MAX_HTML_BYTES, Problem, check_templates

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "emails"
BASE = "https://mail.clinic.example"
WELCOME = "nurture/10-welcome-history.html.j2"
MECHANISM = "nurture/20-how-it-may-work.html.j2"
RISKS = "nurture/30-risks-side-effects.html.j2"
NEWSLETTER = "newsletter/2026-12-winter.html.j2"
CONFIRM = "system/confirm.html.j2"
MARKETING = [WELCOME, MECHANISM, RISKS, "nurture/40-consultation-invite.html.j2", NEWSLETTER]
FOOTER = "the layout's footer provides it unless the footer block is replaced"


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(SHIPPED, target)
    return target


def edit(path: Path, old: str, new: str) -> int:
    """Replace text once; return the 1-based line where the change starts."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, old
    index = text.index(old)
    path.write_text(text[:index] + new + text[index + len(old) :], encoding="utf-8")
    return text[:index].count("\n") + 1


def check(emails: Path, *, dev: bool = False, base_url: str = BASE) -> list[Problem]:
    return check_templates(emails, base_url=base_url, dev=dev)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def extends_line(path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().split("\n"), 1) if "{% extends" in line)


def test_shipped_templates_are_clean() -> None:
    assert check_templates(SHIPPED, base_url=BASE, dev=False) == []


def test_shipped_templates_are_clean_in_dev_with_a_local_base_url() -> None:
    assert check_templates(SHIPPED, base_url="http://localhost:8000", dev=True) == []


def test_problem_reads_path_line_message() -> None:
    assert str(Problem(Path("a/b.html.j2"), 7, "boom")) == "a/b.html.j2:7: boom"


def test_jinja_syntax_error(emails: Path) -> None:
    path = emails / MECHANISM
    line = edit(path, "<h2>Glutamate</h2>", "<h2>{{ Glutamate </h2>")
    problems = errors(check(emails))
    assert [str(p) for p in problems] == [f"{path}:{line}: template syntax error: unexpected '/'"]


def test_syntax_error_in_the_layout_is_reported_once_at_the_layout(emails: Path) -> None:
    path = emails / "layout.html.j2"
    line = edit(path, "{% block body %}{% endblock %}", "{% block body %}{% endblok %}")
    problems = errors(check(emails))
    assert {(p.path, p.line) for p in problems} == {(path, line)}
    assert "endblok" in problems[0].message


def test_undefined_variable(emails: Path) -> None:
    path = emails / RISKS
    line = edit(path, "The team at {{ clinic.name }}", "The team at {{ clinic_name }}")
    assert errors(check(emails)) == [
        Problem(
            path,
            line,
            "'clinic_name' is undefined (the variables a template may use are listed at the top of src/nurture/rendering.py)",
        )
    ]


def test_undefined_attribute_in_the_layout(emails: Path) -> None:
    path = emails / "layout.html.j2"
    line = edit(path, "{{ clinic.postal_address }}", "{{ clinic.postal_adress }}")
    problems = errors(check(emails))
    assert {(p.path, p.line) for p in problems} == {(path, line)}
    assert "postal_adress" in problems[0].message


@pytest.mark.parametrize("field", ["subject", "key"])
def test_missing_front_matter_field(emails: Path, field: str) -> None:
    path = emails / MECHANISM
    text = path.read_text()
    path.write_text("\n".join(line for line in text.split("\n") if not line.startswith(f"{field}:")))
    assert errors(check(emails)) == [
        Problem(path, 1, f"the front matter has no {field!r} (add a '{field}: ...' line)")
    ]


def test_missing_delay_in_a_sequence(emails: Path) -> None:
    path = emails / MECHANISM
    edit(path, "delay_days: 2\n", "")
    assert errors(check(emails)) == [
        Problem(path, 1, "the front matter has no 'delay_days' (days after signing up, e.g. 'delay_days: 2')")
    ]


def test_unknown_front_matter_field(emails: Path) -> None:
    path = emails / MECHANISM
    line = edit(path, "subject:", "subjet:")
    problems = errors(check(emails))
    assert [(p.path, p.line) for p in problems] == [(path, line)]
    assert problems[0].message.startswith("unknown front-matter field 'subjet'")


def test_bad_key(emails: Path) -> None:
    path = emails / MECHANISM
    line = edit(path, "key: how-it-may-work", "key: How It Works")
    assert errors(check(emails)) == [
        Problem(path, line, "key 'How It Works' must be lowercase letters, digits and '-' (at most 64, not starting with '-')")
    ]


def test_duplicate_key_in_a_sequence(emails: Path) -> None:
    path = emails / MECHANISM
    line = edit(path, "key: how-it-may-work", "key: welcome-history")
    assert errors(check(emails)) == [
        Problem(path, line, "duplicate key 'welcome-history' (also in 10-welcome-history.html.j2); keys must be unique")
    ]


def test_decreasing_delays(emails: Path) -> None:
    path = emails / RISKS
    line = edit(path, "delay_days: 5", "delay_days: 1")
    assert errors(check(emails)) == [
        Problem(
            path,
            line,
            "delay_days 1 is less than 2 of the step before it (20-how-it-may-work.html.j2); delays must not decrease in file order",
        )
    ]


def test_unsubscribe_link_missing_from_the_layout(emails: Path) -> None:
    edit(emails / "layout.html.j2", '<a href="{{ unsubscribe_url }}">Unsubscribe</a> &middot; ', "")
    message = f'marketing email has no unsubscribe link (<a href="{{{{ unsubscribe_url }}}}">); {FOOTER}'
    assert errors(check(emails)) == [
        Problem(emails / name, extends_line(emails / name), message) for name in sorted(MARKETING)
    ]


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ('&middot; <a href="{{ preferences_url }}">Email preferences</a>', 'marketing email has no preferences link (<a href="{{ preferences_url }}">)'),
        ("This email is educational and is not medical advice.", "marketing email has no 'not medical advice' disclaimer"),
        (
            "Ketamine is FDA-approved as an anesthetic; its use to treat depression and PTSD is off-label. Esketamine (Spravato), a nasal spray related to ketamine, is FDA-approved for treatment-resistant depression.",
            "marketing email has no line saying ketamine for depression is off-label and esketamine (Spravato) is approved",
        ),
        ("<p>{{ clinic.name }}, {{ clinic.postal_address }}</p>\n{% endblock %}", "marketing email has no postal address ({{ clinic.postal_address }})"),
    ],
    ids=["preferences", "disclaimer", "off-label", "postal-address"],
)
def test_footer_element_missing(emails: Path, old: str, message: str) -> None:
    new = "{% endblock %}" if old.endswith("{% endblock %}") else ""
    edit(emails / "layout.html.j2", old, new)
    problems = errors(check(emails))
    # The mechanism email explains off-label use in its own words, so it still passes that check.
    expected = [n for n in sorted(MARKETING) if not (n == MECHANISM and "off-label" in message)]
    assert problems == [Problem(emails / n, extends_line(emails / n), f"{message}; {FOOTER}") for n in expected]


def test_crisis_line_missing(emails: Path) -> None:
    # The risks email has its own crisis box near the top, so only the others lose it.
    layout = emails / "layout.html.j2"
    text = layout.read_text()
    start = text.index('<table role="presentation" class="crisis"')
    layout.write_text(text[:start] + text[text.index("</table>", start) + 8 :])
    message = f"marketing email has no crisis line (988, the Suicide & Crisis Lifeline); {FOOTER}"
    assert errors(check(emails)) == [
        Problem(emails / n, extends_line(emails / n), message) for n in sorted(MARKETING) if n != RISKS
    ]


def test_footer_replaced_in_one_email(emails: Path) -> None:
    path = emails / NEWSLETTER
    edit(path, "{% endblock %}", "{% endblock %}\n{% block footer %}<p>Bye</p>{% endblock %}")
    problems = errors(check(emails))
    assert {p.path for p in problems} == {path}
    assert len(problems) == 6  # unsubscribe, preferences, disclaimer, off-label, crisis line, postal address


def test_link_that_is_not_https(emails: Path) -> None:
    path = emails / WELCOME
    line = edit(path, "<p>Warm regards,", '<p><a href="http://example.org/history">More history</a></p>\n<p>Warm regards,')
    assert errors(check(emails)) == [Problem(path, line, "link is not https: http://example.org/history")]


def test_http_base_url_only_in_dev(emails: Path) -> None:
    assert check(emails, dev=True, base_url="http://localhost:8000") == []
    problems = errors(check(emails, dev=False, base_url="http://localhost:8000"))
    layout = emails / "layout.html.j2"
    line = next(n for n, text in enumerate(layout.read_text().split("\n"), 1) if "{{ unsubscribe_url" in text)
    assert Problem(
        layout,
        line,
        "link is not https: http://localhost:8000/unsubscribe/sample-token (base_url is not https; that is allowed only in dev mode)",
    ) in problems


def test_mailto_and_tel_links_are_fine(emails: Path) -> None:
    edit(emails / WELCOME, "<p>Warm regards,", '<p><a href="mailto:hello@clinic.example">Email us</a> or <a href="tel:+15550100100">call</a></p>\n<p>Warm regards,')
    assert check(emails) == []


def test_image_without_alt(emails: Path) -> None:
    path = emails / WELCOME
    line = edit(path, "<p>Warm regards,", '<img src="https://clinic.example/logo.png" width="120">\n<p>Warm regards,')
    assert errors(check(emails)) == [Problem(path, line, '<img> has no alt text (use alt="" for a decorative image)')]


def test_image_that_is_not_https(emails: Path) -> None:
    path = emails / WELCOME
    line = edit(path, "<p>Warm regards,", '<img src="http://clinic.example/logo.png" alt="Clinic logo">\n<p>Warm regards,')
    assert errors(check(emails)) == [Problem(path, line, "image is not https: http://clinic.example/logo.png")]


def test_html_over_100_kb(emails: Path) -> None:
    path = emails / NEWSLETTER
    filler = "<p>" + "Plenty of words to read in this paragraph. " * 10 + "</p>\n"
    edit(path, "<h2>News from the clinic</h2>", "{% for i in range(300) %}" + filler + "{% endfor %}\n<h2>News from the clinic</h2>")
    problems = errors(check(emails))
    assert len(problems) == 1 and problems[0].path == path and problems[0].line == extends_line(path)
    assert problems[0].message.startswith("the HTML part is ")
    assert problems[0].message.endswith(f"Gmail clips emails over 102 KB, keep it under {MAX_HTML_BYTES // 1024} KB")


def test_confirm_without_confirm_url(emails: Path) -> None:
    path = emails / CONFIRM
    text = path.read_text().replace("{{ button(confirm_url,", '{{ button("https://clinic.example/",')
    text = text.replace('<a class="raw-url" href="{{ confirm_url }}">{{ confirm_url }}</a>', "")
    path.write_text(text)
    assert errors(check(emails)) == [
        Problem(path, extends_line(path), 'the confirmation email has no confirm link (<a href="{{ confirm_url }}">)')
    ]


def test_confirm_must_not_echo_the_name(emails: Path) -> None:
    path = emails / CONFIRM
    line = edit(path, "<h1>Please confirm", "<p>Hi {{ first_name }},</p>\n<h1>Please confirm")
    assert errors(check(emails)) == [
        Problem(path, line, "the confirmation email must not include anything the subscriber typed (first_name)")
    ]


def test_recipient_value_in_a_condition(emails: Path) -> None:
    path = emails / WELCOME
    line = edit(path, "<p>Hi {{ first_name }},</p>", "{% if first_name %}<p>Hi {{ first_name }},</p>{% endif %}")
    problems = errors(check(emails))
    assert [(p.path, p.line) for p in problems] == [(path, line)]
    assert "may only be output" in problems[0].message


def test_recipient_value_through_a_filter(emails: Path) -> None:
    path = emails / WELCOME
    line = edit(path, "<p>Hi {{ first_name }},</p>", "<p>Hi {{ first_name|title }},</p>")
    problems = errors(check(emails))
    assert [(p.path, p.line) for p in problems] == [(path, line)]
    assert "filter" in problems[0].message


def test_long_subject_is_a_warning(emails: Path) -> None:
    path = emails / WELCOME
    line = edit(path, "subject: Welcome, and where ketamine came from", "subject: " + "Welcome " * 10)
    problems = check(emails)
    assert [(p.path, p.line, p.severity) for p in problems] == [(path, line, "warning")]
