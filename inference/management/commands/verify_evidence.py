"""Verify saved attestation evidence offline and print the result as JSON.

    python manage.py verify_evidence --tee sev-snp|tdx --evidence FILE
        [--certificate FILE] [--chain FILE] [--collateral FILE] [--policy FILE]
        [--now ISO-8601]

For operators and auditors: no network, no database. The inputs are described in
`inference.attestation.offline`; the operator's VCEK cache, CRL folder and TDX collateral
cache from settings are used for whatever the files do not supply. Exit status 0 means
verified, 1 a failed verification (the JSON says why) or unusable input.
"""

import json
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from inference.attestation.offline import OfflineInputError, verify_offline


class Command(BaseCommand):
    help = "Verify saved SEV-SNP or TDX evidence offline; prints JSON, exit status 1 on failure."

    def add_arguments(self, parser):
        parser.add_argument("--tee", required=True, choices=["sev-snp", "tdx"])
        parser.add_argument(
            "--evidence",
            required=True,
            help="the report or quote (binary, hex or base64) or a saved reply/record (JSON)",
        )
        parser.add_argument("--certificate", help="SEV-SNP: the VCEK or VLEK (DER or PEM)")
        parser.add_argument("--chain", help="SEV-SNP: a PEM bundle (ASK/ASVK, ARK, VCEK)")
        parser.add_argument(
            "--collateral", help="TDX: QuoteCollateralV3 JSON; SEV-SNP: AMD's CRL (DER/PEM)"
        )
        parser.add_argument("--policy", help="a policy document (JSON); else authenticity only")
        parser.add_argument("--now", help="verify as of this ISO-8601 time with a zone")

    def handle(self, *args, tee: str, now: str | None, **options):
        files = {
            name: _read(options[name])
            for name in ("evidence", "certificate", "chain", "collateral", "policy")
        }
        try:
            result = verify_offline(
                tee,
                files.pop("evidence"),
                now=_parse_now(now),
                vcek_cache=settings.CUBEAI_ATTESTATION_VCEK_CACHE_DIR or None,
                crl_dir=settings.CUBEAI_ATTESTATION_AMD_CRL_DIR or None,
                collateral_cache=settings.CUBEAI_ATTESTATION_COLLATERAL_CACHE_DIR or None,
                **files,
            )
        except OfflineInputError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result, indent=2, sort_keys=True))
        if not result["ok"]:
            codes = ", ".join(sorted({failure["code"] for failure in result["failures"]}))
            raise CommandError(f"verification failed: {codes}", returncode=1)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return timezone.now()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--now {text!r} is not an ISO-8601 time") from None
    if value.tzinfo is None:
        raise CommandError(f"--now {text!r} needs a time zone (for example Z or +00:00)")
    return value
