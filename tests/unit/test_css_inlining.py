"""premailer as this project sets it up: styles inlined, @media kept and winning, no network."""

from __future__ import annotations

from nurture.content.css_inlining import inline_css

HTML = """<html><head><style>
p { color: #123456; }
@media (max-width: 600px) { .wide { width: 100% !important; } }
</style></head><body><p class="wide">Hi</p><a href="/relative">x</a></body></html>"""


def test_rules_are_inlined_and_media_queries_kept_with_important() -> None:
    out = inline_css(HTML)
    assert 'style="color:#123456"' in out
    assert "@media (max-width: 600px)" in out and "!important" in out
    assert 'class="wide"' in out  # @media rules select by class


def test_links_are_left_alone() -> None:
    assert 'href="/relative"' in inline_css(HTML)


def test_the_same_html_is_inlined_once() -> None:
    inline_css.cache_clear()
    inline_css(HTML)
    inline_css(HTML)
    assert inline_css.cache_info().hits == 1
