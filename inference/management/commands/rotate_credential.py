"""Give a provisioned agent a new credential: `python manage.py rotate_credential <backend>`."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cubeai.exceptions import DomainError
from inference import credentials
from inference.attestation import selectors as attestation_selectors


class Command(BaseCommand):
    help = (
        "Attest the agent, send it a new credential and store it; the agent keeps accepting "
        "the old one for the grace period."
    )

    def add_arguments(self, parser):
        parser.add_argument("backend", help="the backend's name")
        parser.add_argument(
            "--grace",
            type=int,
            default=settings.CUBEAI_BACKEND_CREDENTIAL_GRACE_SECONDS,
            help="seconds the old credential stays valid (default: %(default)s)",
        )

    def handle(self, *args, backend: str, grace: int, **options):
        try:
            row = attestation_selectors.backend_get(name=backend)
            row = credentials.backend_credential_rotate(backend=row, grace_seconds=grace)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"OK: {row.name} holds credential version {row.credential_version}; "
                f"the previous one ends in {grace} s"
            )
        )
