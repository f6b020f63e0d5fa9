"""The test suite's settings: the project's own, in development mode.

DEBUG is off unless asked for (`cubeai/settings.py`), so the suite asks for it here, before
the settings are read. The processes the tests start inherit the variables.
"""

import os

os.environ["DJANGO_DEBUG"] = "true"
# Every test client is 127.0.0.1 and many tests fail authentication on purpose; the limit on
# failed attempts per address is tested on its own (tests/security/test_abuse_before_auth.py).
os.environ.setdefault("CUBEAI_AUTH_FAILURES_PER_MINUTE", "1000000")
# Likewise clients' attestation challenges, whose limits are tested on their own
# (tests/security/test_attestation_abuse.py).
os.environ.setdefault("CUBEAI_ATTESTATION_CLIENT_TOKEN_RPM", "1000000")
os.environ.setdefault("CUBEAI_ATTESTATION_CLIENT_DOMAIN_RPM", "1000000")

from cubeai.settings import *  # noqa: F403

# In-process tests read and write through one uncommitted transaction that only Django's
# shared sync thread sees, so the background work runs there (inference/offpath.py). The
# servers the tests start (cubeai.settings) keep the executors on, as in production.
CUBEAI_OFFPATH_EXECUTORS = False
# Each test runs inside a transaction: begun IMMEDIATE, it would hold SQLite's write lock for
# the whole test, and the servers the tests start could not write their usage meanwhile.
# Those servers (cubeai.settings) keep IMMEDIATE, as in production.
if DATABASES["default"]["ENGINE"] == "cubeai.sqlite3":  # noqa: F405
    DATABASES["default"]["OPTIONS"].pop("transaction_mode", None)  # noqa: F405
