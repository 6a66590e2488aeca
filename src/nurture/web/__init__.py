"""The HTTP side: public signup pages, confirmation, unsubscribe (create_app in app.py)."""

from nurture.web.app import create_app

__all__ = ["create_app"]
