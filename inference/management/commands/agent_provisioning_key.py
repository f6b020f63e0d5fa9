"""Print the platform's provisioning public key, for the agents' `CUBEAI_AGENT_PLATFORM_KEY`."""

from django.core.management.base import BaseCommand

from inference import credentials


class Command(BaseCommand):
    help = "Print the Ed25519 public key (base64) that agents trust for provisioned credentials."

    def handle(self, *args, **options):
        self.stdout.write(credentials.provisioning_public_key())
