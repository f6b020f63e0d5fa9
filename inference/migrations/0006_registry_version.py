from django.db import migrations, models


def first_row(apps, schema_editor):
    apps.get_model("inference", "RegistryVersion").objects.get_or_create(pk=1)


class Migration(migrations.Migration):

    dependencies = [
        ("inference", "0005_backend_credentials"),
    ]

    operations = [
        migrations.CreateModel(
            name="RegistryVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("version", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(first_row, migrations.RunPython.noop),
    ]
