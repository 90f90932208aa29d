"""The test suite's admin key: every server the tests start trusts it, every client sends it.

Clients read it from ``$IDENTITY_API_KEY`` (set here on import), so tests speak about their
subject, not about credentials; tests/test_auth.py is where keys and roles are the subject.
"""

from __future__ import annotations

import os
import secrets

from identity.api_keys import ApiKey, Role

__all__ = ["TEST_ADMIN_KEY", "TEST_KEYS"]

TEST_ADMIN_KEY = f"idk_testadmin_{secrets.token_urlsafe(24)}"
TEST_KEYS = (ApiKey.provisioned(TEST_ADMIN_KEY, [Role.ADMIN], "the test suite's admin"),)
os.environ["IDENTITY_API_KEY"] = TEST_ADMIN_KEY
