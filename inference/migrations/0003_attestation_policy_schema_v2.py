"""Rewrite stored attestation policies into the second policy schema, keeping their meaning.

The second schema (SEV-SNP report v5, Turin, complete policies) changed two things a stored
document depends on:

- SEV-SNP `min_tcb` is per product line and required: `{"bootloader": 3, "tee": 0, "snp": 8,
  "microcode": 115}` applied to Milan and Genoa alike (Turin was unsupported), so it
  becomes the same minimum under "Milan" and under "Genoa", where a level of 0 (no
  minimum) becomes "any";
- new fields default to the strict choice. A stored version must go on enforcing exactly
  what it enforced when it was made (records cite it by number), so the fields it never
  checked are written out as open: `allow_migration_agent` and `allow_cxl` true for
  SEV-SNP, `require_sept_ve_disable` false and `accepted_advisories` "any" for TDX. The
  policy page flags them as open; an operator tightens them by saving a new version.

Backwards: the new fields are dropped and each product's minimum folds into one (the
highest level across the lines, "any" as 0), which old code can read; a policy made for
Turin alone has no equivalent and keeps no minimum.
"""

from django.db import migrations

_COMPONENTS = ("bootloader", "tee", "snp", "microcode")
_OLD_SNP_FIELDS = {
    "measurements",
    "allow_debug",
    "min_tcb",
    "host_data",
    "allowed_vmpls",
    "signing_keys",
    "report_data",
}
_OLD_TDX_FIELDS = {
    "mrtds",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "allow_debug",
    "report_data",
    "accepted_tcb_statuses",
}
_PRODUCTS = ("Milan", "Genoa", "Turin")


def upgrade_document(tee_type: str, document: dict) -> dict:
    """A first-schema document in the second schema, with the same meaning."""
    upgraded = dict(document)
    if tee_type == "sev-snp":
        min_tcb = document.get("min_tcb")
        if not isinstance(min_tcb, dict) or not set(min_tcb) & set(_PRODUCTS):
            old = min_tcb if isinstance(min_tcb, dict) else {}
            levels = {name: old.get(name) or "any" for name in _COMPONENTS}
            upgraded["min_tcb"] = {"Milan": dict(levels), "Genoa": dict(levels)}
        upgraded.setdefault("allow_migration_agent", True)
        upgraded.setdefault("allow_cxl", True)
    elif tee_type == "tdx":
        upgraded.setdefault("require_sept_ve_disable", False)
        upgraded.setdefault("accepted_advisories", "any")
    return upgraded


def downgrade_document(tee_type: str, document: dict) -> dict:
    """A second-schema document that first-schema code can load."""
    if tee_type == "sev-snp":
        old = {key: value for key, value in document.items() if key in _OLD_SNP_FIELDS}
        min_tcb = document.get("min_tcb") or {}
        per_product = [levels for levels in min_tcb.values() if isinstance(levels, dict)]
        old["min_tcb"] = {
            name: max(
                (levels.get(name) for levels in per_product if levels.get(name) != "any"),
                default=0,
            )
            for name in _COMPONENTS
        }
        return old
    if tee_type == "tdx":
        return {key: value for key, value in document.items() if key in _OLD_TDX_FIELDS}
    return dict(document)


def _rewrite(apps, convert) -> None:
    AttestationPolicy = apps.get_model("inference", "AttestationPolicy")
    for row in AttestationPolicy.objects.all().iterator():
        document = convert(row.tee_type, row.document)
        if document != row.document:
            row.document = document
            row.save(update_fields=["document"])


def upgrade(apps, schema_editor) -> None:
    _rewrite(apps, upgrade_document)


def downgrade(apps, schema_editor) -> None:
    _rewrite(apps, downgrade_document)


class Migration(migrations.Migration):
    dependencies = [("inference", "0002_attestation_policy_record")]

    operations = [migrations.RunPython(upgrade, downgrade)]
