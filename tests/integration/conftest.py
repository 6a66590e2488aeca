"""The MTA tier's fixture: one private Debian Postfix for the session (tests/postfix_mta.py)."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def postfix_mta():
    """A started private Postfix: ``.url`` to send to, ``.ca_file`` to trust, ``.inbox()`` to read.

    Skipped without Postfix (or root), unless NURTURE_REQUIRE_MTA=1 (CI), which fails instead."""
    from postfix_mta import start_for_session, unavailable

    reason = unavailable()
    if reason:
        if os.environ.get("NURTURE_REQUIRE_MTA") == "1":
            pytest.fail(f"the MTA tier is required here (NURTURE_REQUIRE_MTA=1): {reason}")
        pytest.skip(f"{reason} (set NURTURE_REQUIRE_MTA=1 to fail instead)")
    mta = start_for_session()
    yield mta
    mta.stop()
    shutil.rmtree(mta.directory, ignore_errors=True)
