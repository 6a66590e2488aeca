"""HTML to readable plain text."""

from __future__ import annotations

from nurture.content.plaintext import HR, html_to_text


def text(body: str) -> str:
    return html_to_text(f"<!DOCTYPE html><html><head><title>T</title><style>p {{}}</style></head><body>{body}</body></html>")


def test_headings_paragraphs_and_whitespace() -> None:
    out = text("<span class='preheader'>hidden</span><h1>Hello, Zoë</h1><p>Some <b>bold</b>\n   text &amp; more.<br>Next line</p><h2>Part</h2>")
    assert out == "Hello, Zoë\n==========\n\nSome bold text & more.\nNext line\n\nPart\n----\n"


def test_lists_keep_bullets_and_numbers() -> None:
    out = text("<ul><li>one</li><li>two<ul><li>inner</li></ul></li></ul><ol><li>a</li><li><p>b</p><p>b2</p></li></ol>")
    assert out == "- one\n- two\n  - inner\n\n1. a\n2. b\n   b2\n"


def test_links_become_footnotes_unless_alone_or_self_describing() -> None:
    out = text(
        '<p>Read <a href="https://a.example/x">the study</a> and <a href="https://a.example/x">again</a>.</p>'
        '<table><tr><td><a href="https://book.example">Book now</a></td></tr></table>'
        '<p><a href="https://u.example">https://u.example</a></p>'
        '<p>Call <a href="tel:988">988</a> or <a href="mailto:hi@clinic.example">email us</a>.</p>'
        '<p>Or <a href="sms:988">text 988</a>, or <a href="sms:988?body=hi">text us</a>.</p>'
        '<p><a href="tel:+16085550142">(608) 555-0142</a>, <a href="tel:+16085550142">the desk</a>.</p>'
    )
    assert out == (
        "Read the study [1] and again [1].\n\nBook now: https://book.example\n\nhttps://u.example\n\n"
        "Call 988 or email us (hi@clinic.example).\n\nOr text 988, or text us (988).\n\n"
        "(608) 555-0142, the desk (+16085550142).\n\n"
        + HR + "\n[1] https://a.example/x\n"
    )


def test_hidden_parts_and_comments_are_left_out() -> None:
    out = text('<!--[if mso]>outlook<![endif]--><p aria-hidden="true">x</p><p data-plaintext="skip">y</p><p>z</p>')
    assert out == "z\n"


def test_blockquote_hr_and_images() -> None:
    out = text('<blockquote><p>quoted</p></blockquote><hr><p><img src="https://x/a.png" alt="A chart"> <img src="https://x/b.png" alt=""></p>')
    assert out == "> quoted\n\n" + HR + "\n\nA chart\n"


def test_empty() -> None:
    assert html_to_text("  ") == ""
