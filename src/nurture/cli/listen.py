"""Where a server command listens: ``--host``/``--port`` over ``NURTURE_HOST``/``NURTURE_PORT``.

The sockets are bound here, before anything starts (no migration, no scheduler, no child
process), and handed to uvicorn: a port in use or a host this machine does not have is one line
and a non-zero exit, never an error from inside the server after half of it has started. Also
whether the links in emails (``NURTURE_BASE_URL``) reach this server at all."""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from nurture.cli.common import Fail

# The studio's guard (web/studio_guard.py) answers only requests naming one of these hosts.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
USAGE = 2  # a bad option, as for any other usage error


def port_option(value: str | None, default: int) -> int:
    """``--port`` as given (a string, so that "abc" gets this project's one-line error rather than
    the option parser's box), or ``default`` (the setting) when not given."""
    if value is None:
        return default
    text = value.strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise Fail(f"--port: must be a number from 1 to 65535, not {value!r}", code=USAGE)


def host_option(value: str | None, default: str) -> str:
    """``--host`` as given, or ``default``. Only its form is checked here; whether this machine
    has that address is for :func:`bind` to find out."""
    if value is None:
        return default
    host = value.strip()
    if "://" in host or "/" in host:
        raise Fail(f"--host: takes an address such as 127.0.0.1 or 0.0.0.0, not a URL: {value!r}", code=USAGE)
    if not host:
        raise Fail("--host: give an address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
                   code=USAGE)
    return host.removeprefix("[").removesuffix("]")  # [::1], as in a URL, is ::1


def require_loopback(host: str) -> None:
    """The studio has no login and can send test emails: it listens on this machine only."""
    if host.lower() not in LOOPBACK_HOSTS:
        raise Fail(f"--host: the studio has no login, so it listens on this machine only "
                   f"({', '.join(LOOPBACK_HOSTS)}), not on {host}", code=USAGE)


def url_for(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def bind(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address ``host`` names, as asyncio would bind
    them (``localhost`` is often both 127.0.0.1 and ::1). Raises Fail with one line."""
    where = url_for(host, port).removeprefix("http://")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise Fail(f"cannot listen on {where}: {host!r} is not an address or a name this machine can resolve "
                   "(127.0.0.1 is this machine only, 0.0.0.0 every interface)") from None
    sockets: list[socket.socket] = []
    missing: OSError | None = None
    try:
        for family, kind, proto, _name, address in dict.fromkeys(addresses):
            try:
                sock = _bound(family, kind, proto, address)
            except OSError as exc:
                # A name such as localhost may also name ::1 on a machine without IPv6: one
                # address of several that is not here is skipped; a port in use never is.
                if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or len(addresses) == 1:
                    raise
                missing = exc
                continue
            sockets.append(sock)
        if not sockets and missing is not None:
            raise missing
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise Fail(f"cannot listen on {where}: {_why(exc, port)}") from None
    return sockets


def _bound(family: int, kind: int, proto: int, address) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _why(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use (another nurture, or another server?); choose another with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address (127.0.0.1 is this machine only, 0.0.0.0 every interface)"
    if exc.errno == errno.EACCES and port < 1024:
        return (f"port {port} needs root; serve on a high port (--port 8000) behind a reverse proxy "
                "(deploy/Caddyfile)")
    return exc.strerror or str(exc)


def base_url_note(base_url: str, host: str, port: int) -> str | None:
    """A warning when the links in emails would miss this server: the base URL names this machine
    directly (a loopback name, or the host it listens on) but another port, as when ``--port 8040``
    is given and NURTURE_BASE_URL still says :8000. A base URL with another name is a reverse
    proxy's (https://signup.clinic.example in front of 127.0.0.1:8000): nothing to say then.
    Two lines: what is wrong, and the setting that fixes it."""
    parts = urlsplit(base_url)
    name = (parts.hostname or "").lower()
    if not (_is_loopback(name) or name == host.lower()):
        return None
    try:
        theirs = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if theirs == port:
        return None
    netloc = f"[{parts.hostname}]:{port}" if ":" in name else f"{parts.hostname}:{port}"
    fixed = parts._replace(netloc=netloc).geturl()
    return f"emails link to {base_url}, not to port {port}:\nset NURTURE_BASE_URL={fixed}"


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
