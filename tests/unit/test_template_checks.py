"""One test per kind of template mistake: copy the shipped templates, break one thing, expect one problem."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from nurture.content.template_checks import MAX_HTML_BYTES, SAMPLE_CLINIC, Problem, check_templates

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "emails"
BASE = "https://mail.clinic.example"
WELCOME = "nurture/10-welcome-history.html.j2"
MECHANISM = "nurture/20-how-it-may-work.html.j2"
RISKS = "nurture/30-risks-side-effects.html.j2"
NEWSLETTER = "newsletter/2026-12-winter.html.j2"
CONFIRM = "system/confirm.html.j2"
MARKETING = [WELCOME, MECHANISM, RISKS, "nurture/40-consultation-invite.html.j2",
             "nurture/45-invite-reminder.html.j2", NEWSLETTER]
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
    assert check_templates(SHIPPED, base_url=BASE, dev=False, strict=True) == []


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
            "'clinic_name' is undefined (the variables a template may use are listed at the top of src/nurture/content/rendering.py)",
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


def test_a_broken_step_is_the_only_problem_reported_not_the_counts_of_the_steps_after_it(emails: Path) -> None:
    """Without the broken file the sequence has one step fewer: 'Part 3' and 'Part 4' would read as
    wrong. Only the real mistake is reported; the counts are checked again once it is fixed."""
    path = emails / MECHANISM
    edit(path, "delay_days: 2\n", "")
    assert check(emails, base_url=BASE) == [
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


# A complete footer of our own in the copy's layout, so each test can take out one line and the
# checks are proved whatever words the shipped layout uses (that one passes: the tests above).
FULL_FOOTER = """{% block footer %}
<p>If you are in crisis: <a href="tel:988">call 988</a>, <a href="sms:988">text 988</a> or
<a href="https://988lifeline.org/chat/">chat at 988lifeline.org</a>.</p>
<p>In immediate danger, call 911.</p>
<p>This inbox is not monitored for emergencies.</p>
<p>This email is educational and is not medical advice.</p>
<p>Ketamine for depression and PTSD is off-label; esketamine (Spravato) is FDA-approved.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> <a href="{{ preferences_url }}">Email preferences</a></p>
<p>{{ clinic.name }}, {{ clinic.postal_address }}</p>
{% endblock %}"""


def use_full_footer(emails: Path) -> None:
    layout = emails / "layout.html.j2"
    text = layout.read_text()
    start = text.index("{% block footer %}")
    end = text.index("{% endblock %}", start) + len("{% endblock %}")
    layout.write_text(text[:start] + FULL_FOOTER + text[end:])


def test_the_full_test_footer_passes(emails: Path) -> None:
    use_full_footer(emails)
    assert check(emails) == []


@pytest.mark.parametrize(
    ("old", "what"),
    [
        ('<a href="{{ unsubscribe_url }}">Unsubscribe</a>', 'unsubscribe link (<a href="{{ unsubscribe_url }}">)'),
        ('<a href="{{ preferences_url }}">Email preferences</a>', 'preferences link (<a href="{{ preferences_url }}">)'),
        ("This email is educational and is not medical advice.", "'not medical advice' disclaimer"),
        ("is off-label; esketamine (Spravato) is FDA-approved.",
         "line saying ketamine for depression is off-label and esketamine (Spravato) is approved"),
        ("and PTSD ", "PTSD in the off-label line (the invitation mentions PTSD)"),
        ('<a href="tel:988">call 988</a>', 'link to call 988, the Suicide & Crisis Lifeline (<a href="tel:988">)'),
        ('<a href="sms:988">text 988</a>', 'link to text 988 (<a href="sms:988">)'),
        ('<a href="https://988lifeline.org/chat/">chat at 988lifeline.org</a>', "link to the 988 Lifeline's chat (https://988lifeline.org)"),
        ("In immediate danger, call 911.", "911 for immediate danger"),
        ("This inbox is not monitored for emergencies.", "line saying this inbox is not monitored for emergencies"),
        ("{{ clinic.name }}, {{ clinic.postal_address }}", "postal address ({{ clinic.postal_address }})"),
    ],
    ids=["unsubscribe", "preferences", "disclaimer", "off-label", "ptsd", "call-988", "text-988", "chat-988",
         "911", "not-monitored", "postal-address"],
)
def test_footer_element_missing(emails: Path, old: str, what: str) -> None:
    use_full_footer(emails)
    edit(emails / "layout.html.j2", old, "")
    message = f"marketing email has no {what} in its footer block; {FOOTER}"
    assert check(emails) == [Problem(emails / n, extends_line(emails / n), message) for n in sorted(MARKETING)]


def test_footer_checks_look_in_the_footer_block_not_the_whole_email(emails: Path) -> None:
    # The risks email's own crisis box near the top has 988 (call, text, chat) and 911: it does not
    # stand in for the footer's crisis lines once its footer block is replaced.
    path = emails / RISKS
    body = path.read_text()
    assert all(s in body for s in ('href="tel:988"', 'href="sms:988"', "https://988lifeline.org", "911"))
    edit(path, "{% endblock %}", '{% endblock %}\n{% block footer %}<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>{% endblock %}')
    problems = errors(check(emails))
    assert {p.path for p in problems} == {path}
    missing = {p.message.removeprefix("marketing email has no ").split(" in its footer block")[0] for p in problems}
    assert {'link to call 988, the Suicide & Crisis Lifeline (<a href="tel:988">)', 'link to text 988 (<a href="sms:988">)',
            "link to the 988 Lifeline's chat (https://988lifeline.org)", "911 for immediate danger",
            "line saying this inbox is not monitored for emergencies"} <= missing
    assert 'unsubscribe link (<a href="{{ unsubscribe_url }}">)' not in missing


def test_footer_replaced_in_one_email(emails: Path) -> None:
    path = emails / NEWSLETTER
    edit(path, "{% endblock %}", "{% endblock %}\n{% block footer %}<p>Bye</p>{% endblock %}")
    problems = errors(check(emails))
    assert {p.path for p in problems} == {path}
    assert len(problems) == 11  # every line the footer must hold


def test_confirmation_footer_needs_the_short_crisis_line(emails: Path) -> None:
    path = emails / CONFIRM
    text = path.read_text()
    start = text.index("{% block footer %}")
    path.write_text(text[:start] + "{% block footer %}<p>{{ clinic.name }}, {{ clinic.postal_address }}</p>{% endblock %}\n")
    assert errors(check(emails)) == [
        Problem(path, text[:start].count("\n") + 1,
                'the confirmation email has no crisis line in its footer (call or text 988: <a href="tel:988">, <a href="sms:988">)')
    ]


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
    line = edit(path, "subject: Welcome, and a little history", "subject: " + "Welcome " * 10)
    problems = check(emails)
    assert [(p.path, p.line, p.severity) for p in problems] == [(path, line, "warning")]


# --------------------------------------------------------------------------- wording rules
# Each is a warning, and an error with strict=True (`nurture templates validate --strict`, `make test`).

def test_strict_makes_every_wording_rule_an_error(emails: Path) -> None:
    edit(emails / MECHANISM, "subject: \"Part 2: how it may work\"", "subject: \"Part 3: how ketamine may work\"")
    edit(emails / RISKS, "<h2>Weighing it up</h2>", "<p>Relief is guaranteed. This is the last email.</p><h2>Weighing it up</h2>")
    relaxed = check(emails)
    strict = check_templates(emails, base_url=BASE, dev=False, strict=True)
    kinds = ("shows on lock screens", 'says "Part 3"', "guaranteed", "last email")
    for kind in kinds:
        assert [p.severity for p in relaxed if kind in p.message][:1] == ["warning"], kind
        assert [p.severity for p in strict if kind in p.message][:1] == ["error"], kind
    assert [(p.path, p.line, p.message) for p in relaxed] == [(p.path, p.line, p.message) for p in strict]
    # The long-subject advice stays advice.
    edit(emails / WELCOME, "subject: Welcome, and a little history", "subject: " + "Welcome " * 10)
    long = [p for p in check_templates(emails, base_url=BASE, dev=False, strict=True) if "characters" in p.message]
    assert [p.severity for p in long] == ["warning"]


def only(problems: list[Problem]) -> tuple[Path, int, str, str]:
    assert len(problems) == 1, problems
    p = problems[0]
    return p.path, p.line, p.severity, p.message


def front_line(path: Path, field: str) -> int:
    return next(n for n, line in enumerate(path.read_text().split("\n"), 1) if line.startswith(f"{field}:"))


@pytest.mark.parametrize(
    ("template", "field", "old", "new", "term"),
    [
        (MECHANISM, "subject", "subject: \"Part 2: how it may work\"", "subject: \"Part 2: how ketamine may work\"", "ketamine"),
        (RISKS, "subject", "subject: \"Part 3: risks and side effects, plainly\"", "subject: Part 3: after a suicide attempt", "suicide"),
        ("nurture/40-consultation-invite.html.j2", "preheader", "preheader: What a first conversation with us involves",
         "preheader: What a talk with a psychiatrist involves", "psychiatrist"),
        (WELCOME, "preheader", "preheader: What to expect from us,", "preheader: Notes on Mental  Health from us,",
         "Mental Health"),
        (NEWSLETTER, "subject", "subject: \"Winter notes:", "subject: \"Winter notes on PTSD:", "PTSD"),
        (CONFIRM, "subject", "subject: Please confirm your subscription", "subject: Confirm your therapy emails", "therapy"),
    ],
    ids=["drug", "suicide", "specialty", "two-words-any-case", "diagnosis-newsletter", "system-email"],
)
def test_health_term_in_a_subject_or_preheader(emails: Path, template: str, field: str, old: str, new: str, term: str) -> None:
    path = emails / template
    edit(path, old, new)
    message = (f'the {field} shows on lock screens: "{term}" names a drug, a diagnosis or a specialty; keep health '
               "words out of it (the list: health-terms.txt beside the templates)")
    assert only(check(emails)) == (path, front_line(path, field), "warning", message)


def test_health_terms_in_the_body_are_fine(emails: Path) -> None:
    # The shipped bodies name the drug and the diagnoses on every page: only what shows on a lock screen counts.
    assert "ketamine" in (emails / MECHANISM).read_text().split("---", 2)[2]
    assert check(emails) == []


def test_marketing_extends_the_list_beside_the_templates(emails: Path) -> None:
    path = emails / NEWSLETTER
    assert check(emails) == []
    terms = emails / "health-terms.txt"
    terms.write_text(terms.read_text() + "\n# seasonal\nseasonal affect*\nwinter blues\n")
    edit(path, "preheader: Looking after yourself in the darker months,", "preheader: Beating the Winter  Blues and Seasonal Affective Disorder,")
    problems = check(emails)
    assert [(p.path, p.line) for p in problems] == [(path, front_line(path, "preheader"))] * 2
    assert ['"Seasonal Affective" names' in p.message for p in problems] == [True, False]
    assert ['"Winter Blues" names' in p.message for p in problems] == [False, True]


def test_a_term_removed_from_the_file_is_still_checked(emails: Path) -> None:
    (emails / "health-terms.txt").write_text("# nothing here\n")
    edit(emails / MECHANISM, "subject: \"Part 2: how it may work\"", "subject: How Esketamine may work")
    assert '"Esketamine" names' in only(check(emails))[3]


def add_step(emails: Path, name: str, key: str, delay: int, subject: str) -> Path:
    path = emails / "nurture" / name
    path.write_text(f"---\nkey: {key}\nsubject: \"{subject}\"\ndelay_days: {delay}\n---\n"
                    "{% extends 'layout.html.j2' %}{% block body %}<p>More.</p>{% include 'nurture/_whats-next.j2' %}{% endblock %}\n")
    return path


def test_shipped_counts_follow_the_sequence_when_a_step_is_added(emails: Path) -> None:
    # The shipped emails say how many there are and what comes next through step.total and step.next.
    add_step(emails, "50-follow-up.html.j2", "follow-up", 12, "Part 5: a follow-up")
    assert check(emails) == []


@pytest.mark.parametrize(
    ("template", "old", "new", "said", "why"),
    [
        (WELCOME, "{{ step.total|words }} short emails", "four short emails", "four short emails", "but there are 5 emails in the sequence"),
        (WELCOME, "{{ step.total|words }} short emails", "4 emails", "4 emails", "but there are 5 emails in the sequence"),
        (MECHANISM, "<h2>Glutamate</h2>", "<p>Two more emails to go.</p><h2>Glutamate</h2>", "Two more emails",
         "but there are 3 emails after this one"),
        (MECHANISM, "<h2>Glutamate</h2>", "<p>This is email 2 of 4.</p><h2>Glutamate</h2>", "email 2 of 4", "but this is email 2 of 5"),
        (RISKS, "<h2>Weighing it up</h2>", "<p>This is the last email.</p><h2>Weighing it up</h2>", "last email",
         "but another step follows this one"),
    ],
    ids=["word", "digit", "remaining", "position", "last"],
)
def test_typed_count_that_disagrees_with_the_sequence(emails: Path, template: str, old: str, new: str, said: str, why: str) -> None:
    # Typed into the text, then a fifth step is added: the words no longer agree with the sequence.
    path = emails / template
    line = edit(path, old, new)
    add_step(emails, "50-follow-up.html.j2", "follow-up", 12, "Part 5: a follow-up")
    problems = check(emails)
    assert [(p.path, p.line, p.severity) for p in problems] == [(path, line, "warning")]
    assert problems[0].message.startswith(f'"{said}" {why}')


def test_a_step_inserted_before_part_2_puts_the_part_numbers_out(emails: Path) -> None:
    add_step(emails, "15-a-pause.html.j2", "a-pause", 1, "Part 2: a pause")
    problems = check(emails)
    moved = {(p.path.name, p.message) for p in problems}
    assert moved == {
        ("20-how-it-may-work.html.j2", 'the subject says "Part 2" but this is step 3 of the sequence'),
        ("30-risks-side-effects.html.j2", 'the subject says "Part 3" but this is step 4 of the sequence'),
        ("40-consultation-invite.html.j2", 'the subject says "Part 4" but this is step 5 of the sequence'),
    }
    assert {p.line for p in problems} == {front_line(emails / MECHANISM, "subject")}


@pytest.mark.parametrize(
    ("sentence", "phrase", "what"),
    [
        ("Ketamine cures depression.", "cures", "promises a cure"),
        ("Many people are cured.", "cured", "promises a cure"),
        ("Relief is guaranteed.", "guaranteed", "promises a result"),
        ("We guarantee you will feel better.", "guarantee", "promises a result"),
        ("It is a miracle for many.", "miracle", "calls a treatment a miracle (quote it if it is others' words)"),
        ("It works for 100% of patients.", "100%", "claims certainty"),
        ("Feel instant relief.", "instant", "promises an instant effect"),
        ("It has no side effects at all.", "no side effects", "denies side effects every medicine has"),
    ],
)
def test_claim_words(emails: Path, sentence: str, phrase: str, what: str) -> None:
    path = emails / MECHANISM
    line = edit(path, "<h2>Glutamate</h2>", f"<p>{sentence}</p>\n<h2>Glutamate</h2>")
    message = f'claim: "{phrase}" {what}; the FTC and FDA treat health claims like this as misleading'
    assert only(check(emails)) == (path, line, "warning", message)


def test_a_claim_in_the_subject(emails: Path) -> None:
    path = emails / MECHANISM
    edit(path, "subject: \"Part 2: how it may work\"", "subject: \"Part 2: instant relief\"")
    problems = check(emails)
    claim = 'claim: "instant" promises an instant effect; the FTC and FDA treat health claims like this as misleading'
    assert Problem(path, front_line(path, "subject"), f"the subject makes a {claim}", "warning") in problems
    # The welcome email names it too ("Coming in two days: ..."): found at the subject's line.
    assert Problem(path, front_line(path, "subject"), claim, "warning") in problems
    assert len(problems) == 2


def test_miracle_in_quotes_is_others_words(emails: Path) -> None:
    assert 'called a "miracle drug"' in (emails / WELCOME).read_text()  # shipped, and clean
    edit(emails / MECHANISM, "<h2>Glutamate</h2>", "<p>Headlines call it a \u201cmiracle\u201d; it is not one.</p>\n<h2>Glutamate</h2>")
    assert check(emails) == []


def test_a_success_percentage_needs_a_citation_in_its_paragraph(emails: Path) -> None:
    path = emails / MECHANISM
    line = edit(path, "<h2>Glutamate</h2>", "<p>In one trial 55% of people responded.</p>\n<h2>Glutamate</h2>")
    assert only(check(emails)) == (path, line, "warning", 'claim: "55%" without a citation in the same paragraph '
                                                            "(link the study or give its DOI)")


@pytest.mark.parametrize("citation", [
    '(<a href="https://doi.org/10.1056/NEJMoa2302399">the trial</a>)',
    "(doi:10.1056/NEJMoa2302399)",
])
def test_a_cited_percentage_is_fine(emails: Path, citation: str) -> None:
    edit(emails / MECHANISM, "<h2>Glutamate</h2>", f"<p>In one trial 55 percent of people responded {citation}.</p>\n<h2>Glutamate</h2>")
    assert check(emails) == []


def test_a_date_that_has_passed_is_a_warning_even_when_strict(emails: Path) -> None:
    path = emails / NEWSLETTER
    line = next(n for n, text in enumerate(path.read_text().split("\n"), 1) if "December 25, 2026" in text)
    for strict in (False, True):
        assert check_templates(emails, base_url=BASE, dev=False, strict=strict, today=date(2026, 12, 25)) == []
        problems = check_templates(emails, base_url=BASE, dev=False, strict=strict, today=date(2026, 12, 26))
        assert problems == [Problem(path, line, '"December 25, 2026" has passed; update or remove it before this goes out', "warning")]
    # A month and year alone is background ("January 2025"), never stale.
    assert "(January 2025)" in path.read_text()


def test_the_invitation_for_a_certified_esketamine_center_passes_too(emails: Path) -> None:
    clinic = {**SAMPLE_CLINIC, "esketamine_certified": True, "consultation_format": "telehealth"}
    assert check_templates(emails, base_url=BASE, dev=False, clinic=clinic, strict=True) == []
