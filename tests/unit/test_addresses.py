"""International addresses on the wire: A-label domains, SMTPUTF8 only for a UTF-8 local part."""

from __future__ import annotations

import pytest

from nurture.addresses import UnencodableAddress, wire_address
from nurture.people.validation import normalise_email


@pytest.mark.parametrize("typed, wire, utf8", [
    ("reader@example.com", "reader@example.com", False),
    ("dora@bücher.example.com", "dora@xn--bcher-kva.example.com", False),
    ("zoë@example.com", "zoë@example.com", True),
    ("zoë@bücher.example.com", "zoë@xn--bcher-kva.example.com", True),
    ("max@straße.de", "max@xn--strae-oqa.de", False),  # IDNA 2008 keeps ß (2003 made it "ss")
    ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", True),
])
def test_the_wire_form_of_an_address_a_person_typed(typed, wire, utf8):
    address = wire_address(normalise_email(typed))
    assert (address.text, address.needs_smtputf8) == (wire, utf8)


@pytest.mark.parametrize("address", ["no-at-sign", "@example.com", "x@", "x@bü_cher.example", "x@ü..example"])
def test_what_has_no_wire_form_says_so(address):
    with pytest.raises(UnencodableAddress):
        wire_address(address)
