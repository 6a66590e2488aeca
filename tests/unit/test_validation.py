import pytest
from hypothesis import given
from hypothesis import strategies as st

from nurture.people.validation import InvalidInput, clean_name, email_hash, normalise_email, parse_bool, parse_signup


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("  jane@example.com  ", "jane@example.com"),
        ("anna@BÜCHER.de", "anna@bücher.de"),
        ("anna@xn--bcher-kva.de", "anna@bücher.de"),
    ],
)
def test_addresses_are_normalised(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "plain", "a@b", "a@@b.com", "x@example.com\r\nBcc: y@example.com", "x@exa\nmple.com",
            "a" * 245 + "@example.com", None, 5],
)
def test_bad_addresses_are_refused_with_a_message(raw):
    with pytest.raises(InvalidInput) as info:
        normalise_email(raw)
    assert info.value.field == "email" and info.value.message


def test_one_identity_per_address_whatever_its_case():
    assert email_hash(normalise_email("A@Example.com")) == email_hash(normalise_email("a@example.COM"))


@pytest.mark.parametrize("raw", ["n" * 101, "a\x00b", "a\tb", "a\u2028b", 3, "Bob\u202egnp.exe", "\U0004f3d3",
                                 "\ue000"])
def test_bad_names_are_refused(raw):
    with pytest.raises(InvalidInput):
        clean_name(raw)


def test_names_in_any_script_are_welcome():
    assert clean_name("Zoë") == "Zoë"
    assert clean_name("محمد") == "محمد"
    assert clean_name("می\u200cخواهم") == "می\u200cخواهم"  # the zero-width non-joiner is part of Persian


def test_names_are_trimmed_and_empty_means_none():
    assert clean_name("  Zoë  ") == "Zoë"
    assert clean_name("   ") is None


@pytest.mark.parametrize(("raw", "value"), [("on", True), ("yes", True), ("true", True), ("0", False), (False, False)])
def test_booleans_are_strict(raw, value):
    assert parse_bool(raw, "consent") is value


def test_unknown_boolean_is_an_error_not_false():
    with pytest.raises(InvalidInput):
        parse_bool("perhaps", "consent")


def test_unknown_fields_are_refused():
    with pytest.raises(InvalidInput) as info:
        parse_signup({"email": "a@example.com", "consent": True, "is_admin": True})
    assert info.value.field == "is_admin"


@given(st.dictionaries(st.sampled_from(["email", "first_name", "timezone", "consent", "website", "extra"]),
                       st.one_of(st.text(max_size=300), st.booleans(), st.integers(), st.none())))
def test_any_input_either_parses_cleanly_or_raises_invalid_input(data):
    try:
        signup = parse_signup(data)
    except InvalidInput as exc:
        assert exc.message
        return
    assert "@" in signup.email and len(signup.email) <= 254
    assert "\n" not in signup.email and "\r" not in signup.email
    assert signup.first_name is None or len(signup.first_name) <= 100
