"""Fakes for what cannot run here. Each says so in its docstring."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

SNP_REPORT_SIZE = 0x4A0
SNP_REPORT_DATA_OFFSET = 0x50
TDX_QUOTE_HEADER_SIZE = 48
TDX_REPORT_DATA_OFFSET = TDX_QUOTE_HEADER_SIZE + 520
TDX_QUOTE_SIZE = TDX_QUOTE_HEADER_SIZE + 584 + 4


class FakeConfigfsTsm:
    """A FAKE of the Linux configfs-tsm report interface, for SEV-SNP and TDX hardware that
    cannot run here (no confidential VM in CI).

    The tree under ``base`` is a real directory, but configfs' kernel side is simulated by
    patching ``Path.mkdir``, ``Path.write_bytes`` and ``Path.rmdir`` for paths inside it:
    ``mkdir`` of an entry creates its attributes (``provider``, ``generation``, ...), writing
    ``inblob`` bumps ``generation`` and produces an ``outblob`` shaped like the real report
    (an SNP ATTESTATION_REPORT or a TDX v4 quote) carrying the inblob as its report data,
    and ``rmdir`` removes the whole entry. The reports are not signed by any vendor key.
    """

    def __init__(self, base: Path, tee: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.base = base
        self.tee = tee
        self.entries_created = 0
        base.mkdir(parents=True, exist_ok=True)
        real_mkdir, real_write_bytes, real_rmdir = Path.mkdir, Path.write_bytes, Path.rmdir
        fake = self

        def mkdir(path: Path, *args: object, **kwargs: object) -> None:
            real_mkdir(path, *args, **kwargs)
            if path.parent == fake.base:
                fake._populate(path)

        def write_bytes(path: Path, data: bytes) -> int:
            written = real_write_bytes(path, data)
            if path.parent.parent == fake.base and path.name == "inblob":
                fake._generate(path.parent, data)
            return written

        def rmdir(path: Path) -> None:
            if path.parent == fake.base:
                shutil.rmtree(path)
            else:
                real_rmdir(path)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        monkeypatch.setattr(Path, "rmdir", rmdir)

    def _populate(self, entry: Path) -> None:
        self.entries_created += 1
        (entry / "provider").write_text("sev_guest\n" if self.tee == "sev-snp" else "tdx_guest\n")
        (entry / "generation").write_text("0\n")
        (entry / "privlevel_floor").write_text("0\n")

    def _generate(self, entry: Path, inblob: bytes) -> None:
        generation = int((entry / "generation").read_text()) + 1
        (entry / "generation").write_text(f"{generation}\n")
        report_data = inblob.ljust(64, b"\0")
        if self.tee == "sev-snp":
            report = bytearray(SNP_REPORT_SIZE)
            struct.pack_into("<I", report, 0, 2)  # report version
            report[SNP_REPORT_DATA_OFFSET : SNP_REPORT_DATA_OFFSET + 64] = report_data
            (entry / "auxblob").write_text("fake SNP certificate table")
        else:
            report = bytearray(TDX_QUOTE_SIZE)
            struct.pack_into("<HHI", report, 0, 4, 2, 0x81)  # v4 quote, ECDSA-P256, TDX
            report[TDX_REPORT_DATA_OFFSET : TDX_REPORT_DATA_OFFSET + 64] = report_data
        (entry / "outblob").write_bytes(bytes(report))
