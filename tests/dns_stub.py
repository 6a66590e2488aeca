"""A real DNS server on loopback for tests (UDP and TCP), answering from a dict of records.

Built on dnspython, which nurture already uses to read records, so the test tier needs nothing more.
``zone[(name, type)]`` is a list of record texts in zone-file form, e.g.
``zone[("clinic.example", "TXT")] = ['"v=spf1 -all"']``; a name with no entry for any type is NXDOMAIN.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def txt(value: str) -> str:
    """A TXT record's text as DNS carries a long value: strings of at most 255 bytes, joined on reading."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, max(len(value), 1), 255))


class DnsStub:
    def __init__(self, zone: dict[tuple[str, str], list[str]] | None = None) -> None:
        self.zone: dict[tuple[str, str], list[str]] = dict(zone or {})
        self.queries: list[tuple[str, str]] = []
        stub = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                sock.sendto(stub.answer(data), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                size = struct.unpack("!H", self.request.recv(2))[0]
                reply = stub.answer(self.request.recv(size))
                self.request.sendall(struct.pack("!H", len(reply)) + reply)

        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
        self.port = self.udp.server_address[1]
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp, bind_and_activate=False)
        self.tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.server_bind()
        self.tcp.server_activate()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        records = self.zone.get((name, kind))
        if records:
            response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", kind, records))
        elif not any(key[0] == name for key in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def __enter__(self) -> DnsStub:
        for server in (self.udp, self.tcp):
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()
