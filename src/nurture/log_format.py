"""How log lines look: text for people or one JSON object a line for a log shipper
(``NURTURE_LOG_FORMAT``), and what never appears in either.

A log line at INFO or above may be read by anyone with access to the server's journal or the log
shipper's index, so two things are masked in the text of every such line, whatever the code that
logged it passed: an email address keeps its first character and its domain (``z***@bücher.example``:
enough to see which provider refused, not who), and a URL keeps its user but not its password
(``smtp://user:***@host``). Server replies and exception messages carry addresses
("550 5.1.1 <zoë@bücher.example>: user unknown"), so the masking is done here, once, rather
than at each call site. DEBUG lines are left whole: they are for a person debugging at the
machine.

Ids a call site passes with ``extra=`` (``outbox_id``, ``subscriber_id``, ``pass_id``) become
fields of the JSON object; the id of the sending pass in progress (:func:`in_pass`) is added to
every line the process logs meanwhile, its sending threads' included (a process runs one pass at a
time: the scheduler never overlaps its runs, and `serve` sends confirmations from a process of
its own).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

# A local part (up to the @) and a domain with at least one dot; Unicode on both sides, since
# addresses are international. Quotes and angle brackets around it stay outside the match.
_ADDRESS = re.compile(r"(?<![\w.+-])([\w.+'-])[\w.+'-]*@((?:[\w-]+\.)+[\w-]{2,})", re.UNICODE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@", re.IGNORECASE)

# Every attribute a LogRecord has of itself; any other was passed with ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}

_current_pass: list[str] = []  # the pass in progress in this process, if any (a stack, for nesting)


def mask(text: str) -> str:
    """``text`` with every email address reduced to its first character and its domain, and every
    URL's password replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _ADDRESS.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


@contextmanager
def in_pass(pass_id: str) -> Iterator[None]:
    """Within this block, every line this process logs carries ``pass_id``."""
    _current_pass.append(pass_id)
    try:
        yield
    finally:
        _current_pass.remove(pass_id)


def _message(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """The record's message, its traceback appended, masked at INFO and above."""
    text = record.getMessage()
    if record.exc_info:
        text = f"{text}\n{formatter.formatException(record.exc_info)}"
    elif record.exc_text:
        text = f"{text}\n{record.exc_text}"
    return mask(text) if record.levelno >= logging.INFO else text


class TextFormatter(logging.Formatter):
    """``time level logger: message``, masked like the JSON lines."""

    def __init__(self, with_process: bool = False) -> None:
        process = " %(processName)s" if with_process else ""
        super().__init__(f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = _message(record, self)
        record.asctime = self.formatTime(record)
        return self.formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO-8601 UTC), ``level``, ``logger``, ``event`` (the
    message, masked), ``process`` for a child process, and the ids given with ``extra=``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": _message(record, self),
        }
        if record.processName != "MainProcess":
            line["process"] = record.processName
        if _current_pass:
            line["pass_id"] = _current_pass[-1]
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value if isinstance(value, (int, float, bool)) or value is None else mask(str(value))
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str, *, with_process: bool = False) -> logging.Formatter:
    """The formatter for ``NURTURE_LOG_FORMAT`` (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else TextFormatter(with_process)


def configure(level: str, log_format: str = "text", *, with_process: bool = False) -> None:
    """Send the root logger's lines to stderr in ``log_format``, and uvicorn's through it too, so
    a server's access and error lines look like the rest. Called once by each entry point (a
    second call replaces the handler rather than adding one)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format, with_process=with_process))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_nurture", False)]:
        root.removeHandler(old)
    handler._nurture = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        # Whatever configured it before (an earlier server in this process, a dictConfig) is undone:
        # its lines follow the root's level, through the root's handler.
        uvicorn_logger.setLevel(logging.NOTSET)
        uvicorn_logger.disabled = False


def uvicorn_log_config() -> dict:
    """uvicorn's ``log_config``: leave its loggers to :func:`configure` (its default config would
    put back its own handlers and format)."""
    return {"version": 1, "disable_existing_loggers": False,
            "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error",
                                                                                 "uvicorn.access")}}
