"""How fast is the Renderer compared with rendering every email from scratch?

    python bench/bench_render.py [--recipients N] [--template NAME]

(a) plain Jinja per recipient (compiled template, no CSS inlining): the floor;
(b) Jinja + premailer per email: what inlining costs when done naively;
(c) Renderer.render: CSS inlined once per template version, then a join of
    pre-split segments per recipient (subject, HTML, text and preheader).

Targets: c >= 50% of a, and c >= 20x b.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nurture.content.css_inlining import inline_css  # noqa: E402
from nurture.content.rendering import Renderer  # noqa: E402
from nurture.content.template_checks import SAMPLE_CLINIC as CLINIC  # noqa: E402

BASE = "https://mail.clinic.example"


def recipients(n: int) -> list[dict[str, str]]:
    names = ["Alex", 'Zoë "Z" O\'Brien <&>', "Sam", "Dana-Marie", "José", "李"]
    return [
        {
            "first_name": f"{names[i % len(names)]}{i}",
            "unsubscribe_url": f"{BASE}/unsubscribe/tok{i:08d}.sig{i * 7919:012d}",
            "preferences_url": f"{BASE}/preferences/tok{i:08d}.sig{i * 7919:012d}",
            "confirm_url": f"{BASE}/confirm/tok{i:08d}.sig{i * 7919:012d}",
        }
        for i in range(n)
    ]


def rate(fn, people: list[dict[str, str]]) -> float:
    start = time.perf_counter()
    for person in people:
        fn(person)
    return len(people) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--template", default="nurture/10-welcome-history.html.j2")
    parser.add_argument("--templates-dir", type=Path, default=ROOT / "templates" / "emails")
    args = parser.parse_args()

    renderer = Renderer(args.templates_dir, clinic=CLINIC, base_url=BASE)
    people = recipients(args.recipients)
    slow_people = people[: max(50, min(len(people), 300))]  # premailer is slow: fewer are enough for a rate

    base = renderer.context(args.template, people[0])
    compiled = renderer.env.get_template(args.template)

    def jinja_only(person):
        return compiled.render({**base, **person})

    def jinja_premailer(person):
        return inline_css(compiled.render({**base, **person}))

    started = time.perf_counter()
    renderer.render(args.template, people[0])  # builds the template version: Jinja + premailer once
    build_ms = (time.perf_counter() - started) * 1000

    for fn in (jinja_only, lambda p: renderer.render(args.template, p)):  # warm up
        rate(fn, people[:50])
    a = rate(jinja_only, people)
    b = rate(jinja_premailer, slow_people)
    c = rate(lambda p: renderer.render(args.template, p), people)

    print(f"template {args.template}; {len(people)} recipients ({len(slow_people)} for b); one-time build {build_ms:.1f} ms")
    print(f"{'method':<44}{'emails/s':>12}{'us/email':>12}")
    for label, value in (
        ("(a) Jinja only, no inlining", a),
        ("(b) Jinja + premailer per email", b),
        ("(c) Renderer: inline once + per-recipient", c),
    ):
        print(f"{label:<44}{value:>12,.0f}{1e6 / value:>12.1f}")
    ca, cb = c / a, c / b
    print(f"c/a = {ca:.2f} (target >= 0.50: {'met' if ca >= 0.5 else 'MISSED'});  "
          f"c/b = {cb:.0f}x (target >= 20x: {'met' if cb >= 20 else 'MISSED'})")


if __name__ == "__main__":
    main()
