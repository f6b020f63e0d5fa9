"""Apply the operator's YAML file of backends, models, deployments and domain grants."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference import registry_file


class Command(BaseCommand):
    help = "Create or update backends, models and deployments from a YAML file (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="Show changes, write nothing.")

    def handle(self, *args, file: Path, dry_run: bool, **options):
        try:
            text = file.read_text()
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror}") from None
        try:
            spec = registry_file.load(text)
            changes = registry_file.apply(spec, dry_run=dry_run)
        except registry_file.RegistryFileError as exc:
            raise CommandError(f"{file} is invalid:\n{exc}") from None
        prefix = "would " if dry_run else ""
        for change in changes:
            self.stdout.write(f"{prefix}{change}")
        if not changes:
            self.stdout.write("no changes")
