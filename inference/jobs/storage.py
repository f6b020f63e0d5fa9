"""The uploaded audio of transcription jobs, in the private data folder, until each job ends.

`CUBEAI_DATA_DIR/transcriptions/` (mode 0700) holds one file per job, named by its id (mode
0600). Web and worker nodes must share this folder (a shared volume in production). The file
is deleted when the job ends (success, failure or cancellation); the sweeper deletes any left
behind by a crash. Nothing here logs a file's content or name.
"""

import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

# A file with no job row yet, younger than this, may belong to a job being created.
ORPHAN_GRACE_SECONDS = 600


def folder() -> Path:
    path = Path(settings.DATA_DIR) / "transcriptions"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def path_of(job_id: uuid.UUID | str) -> Path:
    return folder() / f"{uuid.UUID(str(job_id)).hex}.audio"


def save(job_id: uuid.UUID, chunks: Iterable[bytes]) -> None:
    """Write the upload; only this process's user can read it."""
    path = path_of(job_id)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def read(job_id: uuid.UUID | str) -> bytes | None:
    try:
        return path_of(job_id).read_bytes()
    except FileNotFoundError:
        return None


def delete(job_id: uuid.UUID | str) -> None:
    path_of(job_id).unlink(missing_ok=True)


def stored_ids() -> dict[uuid.UUID, float]:
    """The job ids that have a file, with the file's age in seconds."""
    now = time.time()
    found = {}
    for path in folder().glob("*.audio"):
        try:
            found[uuid.UUID(path.stem)] = now - path.stat().st_mtime
        except (ValueError, FileNotFoundError):
            continue
    return found
