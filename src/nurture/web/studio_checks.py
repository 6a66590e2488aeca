"""The studio's problems list: the template validator's findings, cached per templates stamp,
and error locations made helpful (an unclosed block at the line that opened it, a misspelt name
with the nearest known one, an exception at its template line)."""

from __future__ import annotations

import difflib
import logging
import re
import threading
from pathlib import Path

from nurture.config import Settings
from nurture.content.rendering import TEMPLATE_CONTEXT
from nurture.content.template_checks import Problem, check_templates
from nurture.web.studio_catalogue import relative

log = logging.getLogger(__name__)


def shown_problem(templates_dir: Path, problem: Problem) -> dict[str, object]:
    """A validator finding as the pages list it: file, line, where, a helpful message, severity."""
    rel = relative(templates_dir, problem.path)
    line, message = helpful(problem.path, problem.line, problem.message)
    return {"file": rel, "line": line, "where": f"{rel}:{line}" if line else rel,
            "message": message, "severity": problem.severity}


# Jinja's own words for the two mistakes people make most, which the studio makes more helpful.
_UNDEFINED = re.compile(r"'(\w+)' is undefined")
_UNCLOSED = re.compile(r"Unexpected end of template\. Jinja was looking for the following tags: '(end\w+)'")
_TAG = re.compile(r"{%-?\s*(end)?(block|if|for|macro|call|filter|with|raw|set|autoescape)\b(.*?)-?%}", re.S)
# What a template may name at the top level: the context's first parts (clinic, step...) and filters' inputs.
_KNOWN_NAMES = sorted({v.name.split(".")[0] for v in TEMPLATE_CONTEXT})


def helpful(path: Path | str, line: int, message: str) -> tuple[int, str]:
    """(line, message) as a person needs them: an unclosed block at the line that opened it, not
    at the end of the file where Jinja noticed; an unknown name with the nearest known one."""
    unclosed = _UNCLOSED.search(message)
    if unclosed:
        opened = _unclosed_opening(Path(path), unclosed.group(1)[3:])
        if opened is not None:
            at, tag = opened
            return at, f"{tag} is never closed: add {{% {unclosed.group(1)} %}} where it should end"
    unknown = _UNDEFINED.search(message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), _KNOWN_NAMES, n=1, cutoff=0.6)
        if close:
            return line, f"{message[:unknown.end()]}: did you mean {close[0]}?{message[unknown.end():]}"
    return line, message


def _unclosed_opening(path: Path, kind: str) -> tuple[int, str] | None:
    """The line and text of the innermost ``{% kind %}`` left open in the file, if it can be read."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    stack: list[tuple[int, str, str]] = []
    for match in _TAG.finditer(source):
        end, name = match.group(1), match.group(2)
        if name == "set" and "=" in match.group(3):
            continue  # {% set x = ... %} has no end tag; only the block form {% set x %} does
        if end:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][1] == name:
                    del stack[i:]
                    break
        else:
            stack.append((source.count("\n", 0, match.start()) + 1, name, " ".join(match.group(0).split())))
    for at, name, text in reversed(stack):
        if name == kind:
            return at, text
    return None


class TemplateChecks:
    """check_templates once per templates stamp (it takes a few hundred milliseconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._stamp: str | None = None
        self._problems: list[Problem] = []

    def problems(self, stamp: str) -> list[Problem]:
        with self._lock:
            if stamp != self._stamp:
                s = self.settings
                try:
                    self._problems = check_templates(s.templates_dir, base_url=s.base_url, dev=s.is_dev, clinic=s.clinic)
                except Exception as exc:  # noqa: BLE001 - the validator failing is itself a message to show
                    log.exception("template checks failed")
                    self._problems = [Problem(Path(s.templates_dir), 0, f"the validator stopped: {type(exc).__name__}: {exc}")]
                self._stamp = stamp
            return self._problems


def template_frame(exc: BaseException, templates_dir: Path) -> tuple[Path, int] | None:
    """The innermost template line in a traceback (Jinja maps its frames to template lines)."""
    found, tb = None, exc.__traceback__
    roots = (str(templates_dir), str(templates_dir.resolve()))
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(roots):
            found = (Path(tb.tb_frame.f_code.co_filename), tb.tb_lineno)
        tb = tb.tb_next
    return found
