"""Create (or reuse) the demo admin, the demo domain and a fresh demo token."""

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from domains import permissions, services
from domains.models import Domain, Membership, User
from tokens import services as token_services

DEMO_EMAIL = "admin@example.com"
DEMO_ROUTE = "demo"


class Command(BaseCommand):
    help = "Create or reuse a demo admin user and demo domain, and issue a fresh token."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off.")
        parser.add_argument("--password", help="Demo admin password (default: generated).")

    @transaction.atomic
    def handle(self, *args, **options):
        if not (settings.DEBUG or options["force"]):
            raise CommandError(
                "bootstrap_demo creates a known admin: run it with DEBUG on or --force."
            )
        # The generated password is kept beside the development database (mode 0600) so that
        # every later run can print it again.
        password_file = Path(settings.DATA_DIR) / "demo-admin-password"
        user = User.objects.filter(email=DEMO_EMAIL).first()
        password = options["password"]
        if user is None:
            password = password or secrets.token_urlsafe(12)
            user = User.objects.create_superuser(DEMO_EMAIL, password, name="Demo Admin")
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
        if password:
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password)
        elif password_file.exists():
            password = password_file.read_text().strip()
        domain = Domain.objects.filter(route=DEMO_ROUTE).first()
        if domain is None:
            domain = services.domain_create(creator=user, name="Demo", route=DEMO_ROUTE)
        else:
            Membership.objects.get_or_create(
                user=user,
                domain=domain,
                defaults={"role": services.role_builtin(name=permissions.ADMIN)},
            )
        result = {
            "domain_id": str(domain.pk),
            "admin_email": user.email,
            "admin_password": password,
            "token": token_services.token_issue_demo(owner=user, domain=domain),
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            for key, value in result.items():
                self.stdout.write(f"{key}: {value}")
