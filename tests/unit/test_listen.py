"""Where a server command listens: the options over the settings, the sockets bound before anything
starts, one line for every way that fails, and the banner's word when links would miss the port."""

from __future__ import annotations

import socket

import pytest

from nurture.cli.common import Fail
from nurture.cli.listen import base_url_note, bind, host_option, port_option, require_loopback, url_for


@pytest.mark.parametrize("given, expected", [(None, 8000), ("8040", 8040), (" 1 ", 1), ("65535", 65535)])
def test_a_port_option_overrides_the_setting(given, expected):
    assert port_option(given, 8000) == expected


@pytest.mark.parametrize("given", ["0", "70000", "abc", "", "-1", "80.5", "８０８０"])
def test_a_bad_port_is_one_usage_line(given):
    with pytest.raises(Fail) as caught:
        port_option(given, 8000)
    assert caught.value.code == 2
    assert str(caught.value) == f"--port: must be a number from 1 to 65535, not {given!r}"


def test_a_host_option_overrides_the_setting_and_loses_its_brackets():
    assert host_option(None, "127.0.0.1") == "127.0.0.1"
    assert host_option("0.0.0.0", "127.0.0.1") == "0.0.0.0"
    assert host_option("[::1]", "127.0.0.1") == "::1"


@pytest.mark.parametrize("given", ["http://0.0.0.0", "0.0.0.0/24", "  "])
def test_a_host_that_is_not_an_address_is_one_usage_line(given):
    with pytest.raises(Fail) as caught:
        host_option(given, "127.0.0.1")
    assert caught.value.code == 2 and "\n" not in str(caught.value)


def test_the_studio_stays_on_loopback():
    for host in ("127.0.0.1", "localhost", "::1", "LOCALHOST"):
        require_loopback(host)
    for host in ("0.0.0.0", "192.0.2.7", "::", "127.0.0.2"):  # the studio's guard answers none of these
        with pytest.raises(Fail, match="the studio has no login"):
            require_loopback(host)


def test_bind_returns_bound_sockets_that_uvicorn_can_listen_on():
    sockets = bind("127.0.0.1", 0)
    try:
        [sock] = sockets
        assert sock.getsockname()[0] == "127.0.0.1"
        sock.listen()
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Fail) as caught:
            bind("127.0.0.1", port)
    assert str(caught.value) == (f"cannot listen on 127.0.0.1:{port}: the port is in use (another nurture, or "
                                 "another server?); choose another with --port")
    assert caught.value.code == 1


def test_an_address_this_machine_does_not_have_is_one_line():
    with pytest.raises(Fail, match=r"cannot listen on 192\.0\.2\.1:8000: this machine has no such address"):
        bind("192.0.2.1", 8000)  # TEST-NET-1: on no interface


def test_a_name_that_does_not_resolve_is_one_line():
    with pytest.raises(Fail, match="'no-such-host.invalid' is not an address or a name this machine can resolve"):
        bind("no-such-host.invalid", 8000)


def test_urls_bracket_ipv6():
    assert url_for("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert url_for("::1", 8001) == "http://[::1]:8001"


def test_the_banner_warns_when_the_base_url_names_this_machine_on_another_port():
    note = base_url_note("http://127.0.0.1:8000", "127.0.0.1", 8040)
    assert note == "emails link to http://127.0.0.1:8000, not to port 8040:\nset NURTURE_BASE_URL=http://127.0.0.1:8040"
    assert "http://localhost:8040" in base_url_note("http://localhost:8000", "0.0.0.0", 8040)
    assert "http://[::1]:8040" in base_url_note("http://[::1]:8000", "::1", 8040)
    assert "http://192.0.2.5:9000" in base_url_note("http://192.0.2.5", "192.0.2.5", 9000)  # port 80 implied


@pytest.mark.parametrize("base_url, host, port", [
    ("http://127.0.0.1:8000", "127.0.0.1", 8000),       # they agree
    ("http://localhost:8040", "0.0.0.0", 8040),
    ("https://signup.clinic.example", "127.0.0.1", 8000),  # a reverse proxy's name: its own port
    ("http://192.0.2.5:8000", "127.0.0.1", 8040),        # another machine
])
def test_the_banner_says_nothing_when_links_reach_the_server_or_a_proxy(base_url, host, port):
    assert base_url_note(base_url, host, port) is None
