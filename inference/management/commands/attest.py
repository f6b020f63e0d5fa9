"""Challenge one backend now and print the outcome: `python manage.py attest <backend>`."""

import json

from django.core.management.base import BaseCommand, CommandError

from cubeai.exceptions import NotFound
from inference.attestation import selectors as attestation_selectors
from inference.attestation import services as attestation_services
from inference.models import AttestationRecord


class Command(BaseCommand):
    help = "Run the attestation challenge against a backend; exit status 1 if it fails."

    def add_arguments(self, parser):
        parser.add_argument("backend", help="the backend's name")

    def handle(self, *args, backend: str, **options):
        try:
            row = attestation_selectors.backend_get(name=backend)
        except NotFound as exc:
            raise CommandError(exc.message) from None
        record = attestation_services.backend_attest(
            backend=row, trigger=AttestationRecord.Trigger.ON_DEMAND
        )
        row.refresh_from_db()
        self.stdout.write(f"backend      {row.name} ({row.tee_type}) at {row.base_url}")
        self.stdout.write(f"nonce        {record.nonce}")
        self.stdout.write(f"policy       version {record.policy_version}")
        self.stdout.write(f"status       {row.attestation_status}")
        if record.key_sha256:
            self.stdout.write(f"pinned key   sha256:{record.key_sha256}")
        self.stdout.write("claims       " + json.dumps(record.claims, indent=2, sort_keys=True))
        for failure in record.failures:
            self.stdout.write(f"FAIL {failure['code']}: {failure['message']}")
        if not record.ok:
            raise CommandError(f"attestation of {row.name} failed", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"OK: {row.name} attested ({row.attestation_status})"))
