"""Attestation policies: what a backend's evidence must show to be trusted.

One pydantic model per TEE type. They round-trip through JSON (`model_dump(mode="json")`
and `model_validate`), reject unknown keys so a typo cannot silently switch a check off,
and default to the strict choice: debug forbidden, VMPL 0 only, TCB status UpToDate only.
Measurements have no default: a policy that would accept any workload must not be the
result of leaving a field out. Hex values are normalised to lower case.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .results import TeeType


def _hex_of(size: int) -> Any:
    """A lower-case hex string that encodes exactly `size` bytes."""

    def check(value: str) -> str:
        value = value.strip().lower()
        if len(value) != 2 * size:
            raise ValueError(f"expected {size} bytes ({2 * size} hex digits), got {len(value)}")
        try:
            bytes.fromhex(value)
        except ValueError:
            raise ValueError("not a hex string") from None
        return value

    return Annotated[str, AfterValidator(check)]


Hex32 = _hex_of(32)
Hex48 = _hex_of(48)
Hex64 = _hex_of(64)

_SPL = Annotated[int, Field(ge=0, le=255)]


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnpTcb(_Policy):
    """A minimum TCB for SEV-SNP: each security patch level must be at least this."""

    bootloader: _SPL = 0
    tee: _SPL = 0
    snp: _SPL = 0
    microcode: _SPL = 0


class SnpPolicy(_Policy):
    """Policy for AMD SEV-SNP guests."""

    measurements: list[Hex48] = Field(min_length=1)
    allow_debug: bool = False
    min_tcb: SnpTcb = SnpTcb()
    host_data: Hex32 | None = None
    allowed_vmpls: list[Annotated[int, Field(ge=0, le=3)]] = Field(default=[0], min_length=1)
    # A VLEK is held by the cloud provider on AMD's behalf rather than fused into the chip;
    # both are endorsed by AMD, and an operator who trusts only VCEKs can say so here.
    signing_keys: list[Literal["vcek", "vlek"]] = Field(default=["vcek", "vlek"], min_length=1)
    report_data: Hex64 | None = None


TdxTcbStatus = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
]


class TdxPolicy(_Policy):
    """Policy for Intel TDX guests. A revoked TCB can never be accepted."""

    mrtds: list[Hex48] = Field(min_length=1)
    rtmr0: Hex48 | None = None
    rtmr1: Hex48 | None = None
    rtmr2: Hex48 | None = None
    rtmr3: Hex48 | None = None
    allow_debug: bool = False
    report_data: Hex64 | None = None
    accepted_tcb_statuses: list[TdxTcbStatus] = Field(default=["UpToDate"], min_length=1)


class NonePolicy(_Policy):
    """Policy for a backend with no TEE (the development agent).

    It passes only when an operator explicitly sets `allow_insecure`.
    """

    allow_insecure: bool = False


Policy = SnpPolicy | TdxPolicy | NonePolicy

POLICY_MODELS: dict[TeeType, type[_Policy]] = {
    TeeType.SEV_SNP: SnpPolicy,
    TeeType.TDX: TdxPolicy,
    TeeType.NONE: NonePolicy,
}


def policy_from_json(tee_type: TeeType | str, data: dict[str, Any] | str) -> Policy:
    """Validate a stored policy (a dict or JSON text) for the given TEE type.

    Raises `pydantic.ValidationError` for an invalid policy.
    """
    model = POLICY_MODELS[TeeType(tee_type)]
    if isinstance(data, str):
        return model.model_validate_json(data)  # type: ignore[return-value]
    return model.model_validate(data)  # type: ignore[return-value]
