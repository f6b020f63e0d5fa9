"""The credential every test agent accepts, and the headers that present it.

One random credential per test session: the log scan (`tests/leaks.py`) looks for it in
everything the session logged, so it must be unique to this run.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from agent.credentials import Entry, digest, write_file

AGENT_CREDENTIAL = "cube_bk_test" + secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {AGENT_CREDENTIAL}"}


def credentials_file(directory: Path, credential: str = AGENT_CREDENTIAL) -> Path:
    """A credentials file, in `directory`, that accepts `credential`."""
    path = directory / "agent-credentials.json"
    write_file(path, [Entry(digest(credential), 1)])
    return path
