"""CSS inlining with premailer, configured for email and cached by the HTML it is given.

premailer costs milliseconds an email (Jinja costs microseconds), which is why the renderer
inlines once per template version and fills recipient values into the inlined result.
"""

from __future__ import annotations

import logging
from functools import lru_cache

__all__ = ["inline_css", "quiet_cssutils"]


def quiet_cssutils() -> None:
    """Silence cssutils, which logs every vendor property (mso-*, -webkit-*) to stderr through its own handler."""
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)


@lru_cache(maxsize=32)
def inline_css(html: str) -> str:
    """premailer with this project's settings: never the network, @media rules kept and winning.

    Cached by the HTML itself (premailer is a pure function of it, and slow: a quarter of a second
    an email): a renderer made afresh, as `templates validate` and the studio make one for every
    check, inlines again only the emails whose HTML changed."""
    from premailer import Premailer  # imported lazily: premailer pulls in requests and cssutils

    quiet_cssutils()
    return Premailer(
        html,
        base_url=None,
        disable_link_rewrites=True,
        allow_network=False,
        allow_loading_external_files=False,
        disable_validation=True,  # vendor properties such as mso-hide are not "valid" CSS
        keep_style_tags=False,  # keep only what cannot be inlined: @media and :hover rules
        strip_important=False,  # premailer marks @media rules !important; they must beat inline styles
        exclude_pseudoclasses=True,
        remove_classes=False,  # @media rules select by class
        cssutils_logging_level=logging.CRITICAL,
    ).transform(pretty_print=False)
