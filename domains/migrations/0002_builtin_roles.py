from django.db import migrations

from domains.permissions import BUILTIN_ROLES


def create_builtin_roles(apps, schema_editor):
    Role = apps.get_model("domains", "Role")
    for name, permissions in BUILTIN_ROLES.items():
        Role.objects.update_or_create(
            domain=None, name=name, defaults={"permissions": sorted(permissions)}
        )


class Migration(migrations.Migration):
    dependencies = [("domains", "0001_initial")]

    operations = [migrations.RunPython(create_builtin_roles, migrations.RunPython.noop)]
