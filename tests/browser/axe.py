"""axe-core in a Playwright page: the accessibility rules a checker would report, as readable lines.

axe-core comes from npm (tests/browser/npm/package.json, pinned; `.ci/run` runs `npm ci` there), never
from the network at test time. Where it is missing the tests skip, or fail when NURTURE_REQUIRE_BROWSER=1
(CI), like the browser itself.

Use:  ``assert violations(page) == []``  or, for an email shown as a page,
``violations(page, exclude_rules=EMAIL_RULES_NOT_APPLICABLE)``.

The script is evaluated through the DevTools protocol (``page.evaluate``), which the pages' strict
Content-Security-Policy does not govern, so the pages are checked with their real headers.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

AXE_JS = Path(__file__).parent / "npm" / "node_modules" / "axe-core" / "axe.min.js"

# An email is shown inside a mail client's own page, which supplies the landmarks: these two page rules
# do not fit a message (it carries role="article" with an aria-label instead).
EMAIL_RULES_NOT_APPLICABLE = ("landmark-one-main", "region")

_RUN = """async (disabled) => {
  const rules = Object.fromEntries(disabled.map(id => [id, {enabled: false}]));
  const result = await axe.run(document, {rules, resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary})),
  }));
}"""


@cache
def axe_source() -> str:
    """The axe-core script, or a skip (a failure under NURTURE_REQUIRE_BROWSER=1) when it is not installed."""
    if not AXE_JS.exists():
        reason = f"{AXE_JS} is missing (npm ci --prefix tests/browser/npm)"
        if os.environ.get("NURTURE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"axe-core is required here: {reason}")
        pytest.skip(reason)
    return AXE_JS.read_text(encoding="utf-8")


def violations(page, exclude_rules: tuple[str, ...] | list[str] = ()) -> list[str]:
    """axe-core's violations of any impact on the page as it is now, one line per element, e.g.
    ``"color-contrast (serious) at .hint: Fix any of the following: ..."``; empty when it passes.

    ``exclude_rules`` names axe rule ids that do not apply to what is checked (see
    EMAIL_RULES_NOT_APPLICABLE); everything else counts, whatever its impact.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    found = page.evaluate(_RUN, list(exclude_rules))
    return [f"{v['id']} ({v['impact']}) at {node['target']}: {v['help']}. {node['summary']}"
            for v in found for node in v["nodes"]]
