"""Which fields of a policy are pinned and which are left open.

A pinned field restricts what the hardware may report; an open one accepts anything there
(`"any"`, an empty requirement, or a permissive switch). Open fields are legitimate (an
operator may not know a guest's HOST_DATA), but each is a way through, so the policy page
and API list every field with its state and a warning for each open one.

`report_data` is left out unless set: every challenge binds REPORT_DATA to its own nonce
and the agent's TLS key, whatever the policy says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .policy import ANY, NonePolicy, Policy, SnpPolicy, TdxPolicy
from .snp_report import GENOA, MILAN, TURIN


@dataclass(frozen=True)
class FieldReview:
    """One policy field: its dotted name, its value, and a warning when it is open."""

    field: str
    value: Any
    warning: str = ""

    @property
    def pinned(self) -> bool:
        return not self.warning

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "value": self.value,
            "pinned": self.pinned,
            "warning": self.warning or None,
        }


def policy_review(policy: Policy) -> list[FieldReview]:
    """Every field of a validated policy, in document order, pinned or open."""
    if isinstance(policy, SnpPolicy):
        return _snp(policy)
    if isinstance(policy, TdxPolicy):
        return _tdx(policy)
    if isinstance(policy, NonePolicy):
        warning = (
            "a backend without a TEE is accepted: nothing about it is attested"
            if policy.allow_insecure
            else ""
        )
        return [FieldReview("allow_insecure", policy.allow_insecure, warning)]
    raise TypeError(f"not a policy: {type(policy).__name__}")


def _open_if(condition: bool, warning: str) -> str:
    return warning if condition else ""


def _snp(policy: SnpPolicy) -> list[FieldReview]:
    fields = [FieldReview("measurements", list(policy.measurements))]
    for product in (MILAN, GENOA, TURIN):
        minimum = policy.min_tcb.for_product(product)
        if minimum is None:
            fields.append(FieldReview(f"min_tcb.{product}", "not accepted"))
            continue
        for name, value in minimum.minimums().items():
            warning = _open_if(
                value == ANY,
                f"any {name} SPL is accepted on {product}, including firmware with "
                "published vulnerabilities",
            )
            fields.append(FieldReview(f"min_tcb.{product}.{name}", value, warning))
    fields += [
        FieldReview(
            "min_firmware",
            policy.min_firmware,
            _open_if(policy.min_firmware is None, "any SEV firmware version is accepted"),
        ),
        FieldReview(
            "min_abi",
            policy.min_abi,
            _open_if(policy.min_abi is None, "any guest policy ABI minimum is accepted"),
        ),
        FieldReview("allowed_vmpls", list(policy.allowed_vmpls)),
        FieldReview("signing_keys", list(policy.signing_keys)),
        FieldReview(
            "allow_debug",
            policy.allow_debug,
            _open_if(policy.allow_debug, "debug guests are accepted: the host can read them"),
        ),
        FieldReview(
            "allow_migration_agent",
            policy.allow_migration_agent,
            _open_if(
                policy.allow_migration_agent,
                "guests with a migration agent are accepted: it can export their memory",
            ),
        ),
        FieldReview(
            "allow_smt",
            policy.allow_smt,
            _open_if(
                policy.allow_smt,
                "guests that allow SMT are accepted (threads of another tenant may share "
                "their cores)",
            ),
        ),
        FieldReview(
            "require_single_socket",
            policy.require_single_socket,
            _open_if(not policy.require_single_socket, "guests may span several sockets"),
        ),
        FieldReview(
            "allow_cxl",
            policy.allow_cxl,
            _open_if(policy.allow_cxl, "guest memory may live on CXL devices"),
        ),
        FieldReview(
            "require_ciphertext_hiding",
            policy.require_ciphertext_hiding,
            _open_if(
                not policy.require_ciphertext_hiding,
                "guests are not required to enable ciphertext hiding",
            ),
        ),
        FieldReview(
            "required_platform_info",
            list(policy.required_platform_info),
            _open_if(
                not policy.required_platform_info,
                "no PLATFORM_INFO feature (TSME, ciphertext hiding...) is required",
            ),
        ),
        FieldReview(
            "id_key_digests",
            policy.id_key_digests,
            _open_if(policy.id_key_digests is None, "any ID key (or none) is accepted"),
        ),
        FieldReview(
            "author_key_digests",
            policy.author_key_digests,
            _open_if(policy.author_key_digests is None, "any author key (or none) is accepted"),
        ),
        FieldReview(
            "min_guest_svn",
            policy.min_guest_svn,
            _open_if(policy.min_guest_svn == 0, "any GUEST_SVN is accepted"),
        ),
        FieldReview(
            "host_data",
            policy.host_data,
            _open_if(policy.host_data is None, "any HOST_DATA is accepted"),
        ),
        FieldReview(
            "family_id",
            policy.family_id,
            _open_if(policy.family_id is None, "any FAMILY_ID is accepted"),
        ),
        FieldReview(
            "image_id",
            policy.image_id,
            _open_if(policy.image_id is None, "any IMAGE_ID is accepted"),
        ),
        FieldReview(
            "required_launch_mitigations",
            _mask(policy.required_launch_mitigations),
            _open_if(
                policy.required_launch_mitigations is None,
                "no mitigation is required at launch",
            ),
        ),
        FieldReview(
            "required_current_mitigations",
            _mask(policy.required_current_mitigations),
            _open_if(policy.required_current_mitigations is None, "no mitigation is required now"),
        ),
        FieldReview(
            "require_crl",
            policy.require_crl,
            _open_if(
                not policy.require_crl,
                "AMD revocations are checked only when the operator supplied a CRL",
            ),
        ),
    ]
    if policy.report_data is not None:
        fields.append(FieldReview("report_data", policy.report_data))
    return fields


def _tdx(policy: TdxPolicy) -> list[FieldReview]:
    fields = [FieldReview("mrtds", list(policy.mrtds))]
    for name, what in (
        ("rtmr0", "firmware (RTMR0)"),
        ("rtmr1", "boot loader and kernel (RTMR1)"),
        ("rtmr2", "kernel command line and initrd (RTMR2)"),
        ("rtmr3", "runtime measurements (RTMR3)"),
        ("mrconfigid", "MRCONFIGID"),
        ("mrowner", "MROWNER"),
        ("mrownerconfig", "MROWNERCONFIG"),
        ("xfam", "XFAM (extended CPU features)"),
        ("td_attributes", "TD_ATTRIBUTES value"),
    ):
        value = getattr(policy, name)
        fields.append(FieldReview(name, value, _open_if(value is None, f"any {what} is accepted")))
    fields += [
        FieldReview(
            "require_sept_ve_disable",
            policy.require_sept_ve_disable,
            _open_if(
                not policy.require_sept_ve_disable,
                "TDs without SEPT_VE_DISABLE are accepted: the host can inject #VE",
            ),
        ),
        FieldReview(
            "allow_debug",
            policy.allow_debug,
            _open_if(policy.allow_debug, "debug TDs are accepted: the host can read them"),
        ),
        FieldReview(
            "min_tee_tcb_svn",
            policy.min_tee_tcb_svn,
            _open_if(policy.min_tee_tcb_svn is None, "any TDX module SVN is accepted"),
        ),
        FieldReview(
            "accepted_tcb_statuses",
            list(policy.accepted_tcb_statuses),
            _open_if(
                policy.accepted_tcb_statuses != ["UpToDate"],
                "platforms that are not up to date are accepted",
            ),
        ),
        FieldReview(
            "accepted_advisories",
            policy.accepted_advisories,
            _open_if(
                policy.accepted_advisories == ANY,
                "platforms exposed to any Intel security advisory are accepted",
            ),
        ),
    ]
    if policy.report_data is not None:
        fields.append(FieldReview("report_data", policy.report_data))
    return fields


def _mask(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"
