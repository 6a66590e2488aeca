"""The axe harness itself: it finds what it should, honours exclusions, and works under the pages' CSP.

Without this, "zero violations" elsewhere could be the sound of a harness that never ran.
"""

from __future__ import annotations

import pytest

from browser.axe import EMAIL_RULES_NOT_APPLICABLE, violations

pytestmark = pytest.mark.browser

BROKEN = """<!doctype html><html><head><title>t</title></head><body>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<p style="color:#aaa;background:#fff">faint text</p></body></html>"""


def test_it_reports_each_rule_with_its_impact_and_the_element(page):
    page.set_content(BROKEN)
    found = violations(page)
    assert any(line.startswith("image-alt (critical) at img") for line in found), found
    assert any(line.startswith("color-contrast (serious) at p") for line in found), found
    assert any(line.startswith("html-has-lang (serious)") for line in found), found
    assert any(line.startswith("region (moderate)") for line in found), found  # any impact counts


def test_excluded_rules_are_left_out_and_only_those(page):
    page.set_content(BROKEN)
    found = violations(page, exclude_rules=EMAIL_RULES_NOT_APPLICABLE)
    assert not any(line.startswith(("region ", "landmark-one-main ")) for line in found)
    assert any(line.startswith("image-alt ") for line in found)


def test_it_runs_on_a_real_page_under_its_content_security_policy(live_server, page):
    page.goto(live_server.url + "/")
    assert violations(page) == []
    # The page's own CSP is in force (script-src 'self'): the harness did not need it relaxed.
    assert "script-src 'self'" in page.request.get(live_server.url + "/").headers["content-security-policy"]
