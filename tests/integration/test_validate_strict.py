"""`nurture templates validate --strict` as `make test` runs it: wording warnings fail the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import SECRET, TEMPLATES


def validate(workdir, templates, *flags):
    environ = {**os.environ, "NURTURE_SECRET_KEY": SECRET, "NURTURE_TEMPLATES_DIR": str(templates), "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "nurture", "templates", "validate", *flags], cwd=workdir,
                          env=environ, capture_output=True, text=True, timeout=120)


def test_the_shipped_templates_pass_strict(tmp_path):
    done = validate(tmp_path, TEMPLATES, "--strict")
    assert done.returncode == 0, done.stderr
    assert "templates OK" in done.stderr and "warning" not in done.stderr


def test_a_health_word_in_a_subject_warns_and_fails_strict(tmp_path):
    templates = tmp_path / "emails"
    shutil.copytree(TEMPLATES, templates)
    step = templates / "nurture" / "30-risks-side-effects.html.j2"
    step.write_text(step.read_text().replace('subject: "Part 3: risks and side effects, plainly"',
                                             "subject: Ketamine's risks and side effects"))
    relaxed = validate(tmp_path, templates)
    assert relaxed.returncode == 0, relaxed.stderr
    assert "templates OK" in relaxed.stderr and "(1 warning(s))" in relaxed.stderr
    assert '30-risks-side-effects.html.j2:3: the subject shows on lock screens: "Ketamine" names' in relaxed.stderr
    strict = validate(tmp_path, templates, "--strict")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert f'error {step}:3: the subject shows on lock screens: "Ketamine" names' in strict.stderr
    assert strict.stderr.strip().splitlines()[-1].startswith("error: 1 problem(s) in")
