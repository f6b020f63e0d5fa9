"""Attestation policies: what a backend's evidence must show to be trusted.

One pydantic model per TEE type. They round-trip through JSON (`model_dump(mode="json")`
and `model_validate`), reject unknown keys so a typo cannot silently switch a check off,
and default to the strict choice wherever one exists: debug and the migration agent
refused, CXL memory refused, VMPL 0 only, TDX's SEPT_VE_DISABLE required, TCB status
UpToDate only with no advisories. Measurements have no default, and neither has the SEV-SNP
minimum TCB: an operator states one for each product line it accepts, or writes "any" on
purpose. A policy that would accept any workload must never be the result of leaving a
field out. Hex values are normalised to lower case.

Every field is documented in `inference/attestation/README.md`; `review.policy_review`
lists which are pinned and which are left open.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    model_serializer,
    model_validator,
)

from .results import TeeType
from .snp_report import GENOA, MILAN, PLATFORM_INFO_BITS, TURIN

ANY = "any"


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


Hex8 = _hex_of(8)
Hex16 = _hex_of(16)
Hex32 = _hex_of(32)
Hex48 = _hex_of(48)
Hex64 = _hex_of(64)


def _check_minimum(value: Any) -> int | str:
    # One validator for both forms, so a bad value gets one clear error at its own path
    # rather than one per branch of a union.
    if value == ANY:
        return ANY
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError('must be a security patch level 0..255 or "any"')
    return value


Minimum = Annotated[int | Literal["any"], PlainValidator(_check_minimum)]


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TcbMinimum(_Policy):
    @model_validator(mode="before")
    @classmethod
    def _any(cls, data: Any) -> Any:
        if data == ANY:
            return dict.fromkeys(cls.model_fields, ANY)
        return data

    def minimums(self) -> dict[str, int | str]:
        return {name: getattr(self, name) for name in type(self).model_fields}


class SnpTcb(_TcbMinimum):
    """Minimum security patch levels of a Milan or Genoa TCB; "any" for all of them."""

    bootloader: Minimum
    tee: Minimum
    snp: Minimum
    microcode: Minimum


class TurinTcb(_TcbMinimum):
    """Minimum security patch levels of a Turin TCB, which adds the FMC."""

    fmc: Minimum
    bootloader: Minimum
    tee: Minimum
    snp: Minimum
    microcode: Minimum


class SnpMinTcb(_Policy):
    """The accepted product lines, each with its minimum TCB. A product line that is not
    listed is refused; "any" stands for every line with no minimum."""

    Milan: SnpTcb | None = None
    Genoa: SnpTcb | None = None
    Turin: TurinTcb | None = None

    @model_validator(mode="before")
    @classmethod
    def _any(cls, data: Any) -> Any:
        if data == ANY:
            return dict.fromkeys(cls.model_fields, ANY)
        return data

    @model_validator(mode="after")
    def _some_product(self) -> SnpMinTcb:
        if not self.products():
            raise ValueError(f"name at least one product line ({MILAN}, {GENOA}, {TURIN})")
        return self

    @model_serializer(mode="wrap")
    def _listed_only(self, handler: Any) -> dict[str, Any]:
        # A product that is not accepted is absent from the stored document, not null.
        return {name: value for name, value in handler(self).items() if value is not None}

    def products(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]

    def for_product(self, product: str | None) -> SnpTcb | TurinTcb | None:
        return getattr(self, product, None) if product in type(self).model_fields else None


def _version_of(parts: int) -> Any:
    """A dotted firmware or ABI version ("1.55" or "1.55.40"), kept as text."""

    def check(value: str) -> str:
        pattern = r"\d{1,3}\.\d{1,3}" + (r"(\.\d{1,3})?" if parts == 3 else "")
        if not re.fullmatch(pattern, value.strip()):
            shape = "major.minor" if parts == 2 else "major.minor or major.minor.build"
            raise ValueError(f"expected a version {shape}, each part 0..255")
        numbers = [int(part) for part in value.strip().split(".")]
        if any(number > 255 for number in numbers):
            raise ValueError("each part of a version is 0..255")
        return ".".join(map(str, numbers))

    return Annotated[str, AfterValidator(check)]


FirmwareVersion = _version_of(3)
AbiVersion = _version_of(2)

PlatformInfoFlag = Literal[tuple(PLATFORM_INFO_BITS)]  # type: ignore[valid-type]
MitigationMask = Annotated[int, Field(ge=0, lt=1 << 64)]


class SnpPolicy(_Policy):
    """Policy for AMD SEV-SNP guests (every field: `inference/attestation/README.md`)."""

    measurements: list[Hex48] = Field(min_length=1)
    min_tcb: SnpMinTcb
    min_firmware: FirmwareVersion | None = None
    min_abi: AbiVersion | None = None
    allowed_vmpls: list[Annotated[int, Field(ge=0, le=3)]] = Field(default=[0], min_length=1)
    # A VLEK is held by the cloud provider on AMD's behalf rather than fused into the chip;
    # both are endorsed by AMD, and an operator who trusts only VCEKs can say so here.
    signing_keys: list[Literal["vcek", "vlek"]] = Field(default=["vcek", "vlek"], min_length=1)
    allow_debug: bool = False
    allow_migration_agent: bool = False
    # Every shipping cloud guest policy allows SMT, so refusing it by default would refuse
    # every real deployment; an operator who fears cross-thread channels sets it false.
    allow_smt: bool = True
    require_single_socket: bool = False
    allow_cxl: bool = False
    require_ciphertext_hiding: bool = False
    required_platform_info: list[PlatformInfoFlag] = []
    id_key_digests: list[Hex48] | None = Field(default=None, min_length=1)
    author_key_digests: list[Hex48] | None = Field(default=None, min_length=1)
    min_guest_svn: Annotated[int, Field(ge=0, lt=1 << 32)] = 0
    host_data: Hex32 | None = None
    family_id: Hex16 | None = None
    image_id: Hex16 | None = None
    required_launch_mitigations: MitigationMask | None = None
    required_current_mitigations: MitigationMask | None = None
    require_crl: bool = False
    report_data: Hex64 | None = None


TdxTcbStatus = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
]

TD_ATTRIBUTE_DEBUG = 1 << 0
TD_ATTRIBUTE_SEPT_VE_DISABLE = 1 << 28


def _check_advisories(value: Any) -> list[str] | str:
    if value == ANY:
        return ANY
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError('must be a list of advisory ids ("INTEL-SA-00615") or "any"')
    ids = [item.strip().upper() for item in value]
    for item in ids:
        if not re.fullmatch(r"INTEL-SA-\d{5}", item):
            raise ValueError(f"{item!r} is not an Intel advisory id like INTEL-SA-00615")
    return ids


Advisories = Annotated[list[str] | Literal["any"], PlainValidator(_check_advisories)]


class TdxPolicy(_Policy):
    """Policy for Intel TDX guests. A revoked TCB can never be accepted."""

    mrtds: list[Hex48] = Field(min_length=1)
    rtmr0: Hex48 | None = None
    rtmr1: Hex48 | None = None
    rtmr2: Hex48 | None = None
    rtmr3: Hex48 | None = None
    mrconfigid: Hex48 | None = None
    mrowner: Hex48 | None = None
    mrownerconfig: Hex48 | None = None
    xfam: Hex8 | None = None
    td_attributes: Hex8 | None = None
    require_sept_ve_disable: bool = True
    allow_debug: bool = False
    min_tee_tcb_svn: Hex16 | None = None
    accepted_tcb_statuses: list[TdxTcbStatus] = Field(default=["UpToDate"], min_length=1)
    accepted_advisories: Advisories = []
    report_data: Hex64 | None = None

    @model_validator(mode="after")
    def _consistent_attributes(self) -> TdxPolicy:
        # A pinned TD_ATTRIBUTES value that the other fields refuse could never pass.
        if self.td_attributes is None:
            return self
        attributes = int.from_bytes(bytes.fromhex(self.td_attributes), "little")
        if attributes & TD_ATTRIBUTE_DEBUG and not self.allow_debug:
            raise ValueError("td_attributes has DEBUG set but allow_debug is false")
        if self.require_sept_ve_disable and not attributes & TD_ATTRIBUTE_SEPT_VE_DISABLE:
            raise ValueError(
                "td_attributes lacks SEPT_VE_DISABLE but require_sept_ve_disable is true"
            )
        return self


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
