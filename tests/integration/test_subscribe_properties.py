"""Property-based: no body sent to /subscribe makes the server answer 5xx or store a bad row."""

from __future__ import annotations

import json
import unicodedata

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from nurture.models import ConsentEvent, Subscriber
from nurture.people.validation import MAX_EMAIL, MAX_NAME
from nurture.runtime import Runtime
from nurture.web import create_app

from conftest import make_settings

FIELDS = st.sampled_from(["email", "first_name", "timezone", "consent", "consent_version", "website", "extra"])
VALUES = st.one_of(
    st.text(max_size=300),
    st.emails(),
    st.sampled_from(["Europe/Berlin", "Mars/Olympus", "", "yes", "on", "true", "a@b", "x\r\ny@example.com",
                     "=?utf-8?q?a=0D=0A?=@example.com", "Anna@BÜCHER.de"]),
    st.booleans(),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


@pytest.fixture
def runtime(tmp_path, database_url, memory_transport):
    """No per-IP limit here: every example should reach the rules and the database."""
    rt = Runtime(make_settings(tmp_path, database_url, subscribe_rate="1000000/second"),
                 transport_override=memory_transport)
    yield rt
    rt.close()


# Nearly valid bodies, so the rules and the database are exercised, not only the validator.
NEARLY_VALID = st.fixed_dictionaries(
    {"email": st.emails(), "consent": st.sampled_from([True, "yes", "on", 1])},
    optional={"first_name": st.text(max_size=120), "timezone": st.sampled_from(["Europe/Berlin", "Asia/Tokyo", ""]),
              "website": st.sampled_from(["", "spam"])},
)
BODIES = st.one_of(NEARLY_VALID, st.dictionaries(FIELDS, VALUES, max_size=6))


def _assert_rows_are_well_formed(runtime):
    with runtime.sessions() as session:
        for subscriber in session.scalars(select(Subscriber)):
            assert subscriber.email and "@" in subscriber.email and len(subscriber.email) <= MAX_EMAIL
            assert subscriber.email == subscriber.email.strip().lower()
            assert not any(c in subscriber.email for c in "\r\n\x00")
            assert subscriber.first_name is None or (
                len(subscriber.first_name) <= MAX_NAME
                and all(unicodedata.category(c)[0] != "C" or c in "\u200c\u200d" for c in subscriber.first_name))
            assert subscriber.timezone
        for event in session.scalars(select(ConsentEvent)):
            assert event.wording and event.wording_version


def test_any_json_or_form_body_gets_a_non_5xx_answer_and_stores_only_clean_rows(runtime):
    app = create_app(runtime, dispatch=False)
    with TestClient(app, raise_server_exceptions=False) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
        @given(body=BODIES, as_form=st.booleans())
        def check(body, as_form):
            if as_form:
                form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
                response = client.post("/subscribe", data=form)
            else:
                response = client.post("/subscribe", json=body)
            assert response.status_code < 500, response.text
            assert response.status_code in (200, 202, 400, 413, 415, 422)

        check()
    _assert_rows_are_well_formed(runtime)
    with runtime.sessions() as session:
        assert session.scalars(select(Subscriber)).first() is not None  # the happy path was reached too


def test_arbitrary_bytes_with_any_content_type_never_cause_a_5xx(runtime):
    app = create_app(runtime, dispatch=False)
    with TestClient(app, raise_server_exceptions=False) as client:

        @settings(max_examples=100, deadline=None, suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
        @given(content=st.binary(max_size=2000),
               content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                             "multipart/form-data", "text/plain", "", "application/json; charset=latin-1"]))
        def check(content, content_type):
            headers = {"content-type": content_type} if content_type else {}
            response = client.post("/subscribe", content=content, headers=headers)
            assert response.status_code < 500, response.text

        check()
    _assert_rows_are_well_formed(runtime)
