"""The test suite's admin key: every server the tests start trusts it, every client sends it.

Clients read it from ``$IDENTITY_API_KEY`` (set here on import), so tests speak about their
subject, not about credentials; tests/test_auth.py is where keys and roles are the subject.
"""

from __future__ import annotations

import os
import secrets

from identity.api_keys import ApiKey, Role, digest_of

__all__ = ["TEST_ADMIN_KEY", "TEST_KEYS"]

_SECRET = secrets.token_urlsafe(24)
TEST_ADMIN_KEY = f"idk_testadmin_{_SECRET}"
TEST_KEYS = (ApiKey("testadmin", frozenset({Role.ADMIN}), digest_of(_SECRET),
                    "the test suite's admin", from_settings=True),)
os.environ["IDENTITY_API_KEY"] = TEST_ADMIN_KEY
