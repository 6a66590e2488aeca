"""The ``nurture`` command: thin commands over the modules, one file per kind of user.

Importing the command modules registers their commands on the shared Typer app.
"""

from nurture.cli import operate, content, people, goals, maintain, webhooks  # noqa: F401, I001  (registers the commands, in help order)
from nurture.cli.common import app, main

__all__ = ["app", "main"]
