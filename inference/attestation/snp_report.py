"""AMD SEV-SNP attestation reports: the layout, the product and the TCB version.

The layout follows AMD's SEV-SNP firmware ABI (56860), ATTESTATION_REPORT: 1184 bytes,
little-endian, bytes 0x000..0x29F signed with ECDSA P-384/SHA-384, R and S as 72-byte
little-endian numbers at 0x2A0 and 0x2E8. Versions:

- 2: the original layout;
- 3: adds CPUID_FAM_ID, CPUID_MOD_ID and CPUID_STEP at 0x188..0x18A (firmware 1.55);
- 5: adds LAUNCH_MIT_VECTOR (0x1F8) and CURRENT_MIT_VECTOR (0x200), the mitigations in
  force at launch and now (firmware 1.55.4x and later on Milan and Genoa, always on Turin).

Those are the versions we have genuine reports of (`tests/attestation/data/README.md`).
Any other version, including 4 and anything newer, is refused with `unsupported_version`
rather than read with a layout that might have moved.

The product line (Milan, Genoa, Turin) decides how the 8-byte TCB_VERSION fields are laid
out. From version 3 on it comes from the report's CPUID fields, as AMD's KDS specification
(57230, "Determining the product name") maps them; a version 2 report has no CPUID and is
always Milan or Genoa, which share a layout. The verifier cross-checks this product with
the endorsement certificate's issuer and productName.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .results import FailureCode, TeeType

REPORT_SIZE = 1184
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 5)

MILAN = "Milan"
GENOA = "Genoa"
TURIN = "Turin"

# CPUID family and model ranges of each KDS product line. Bergamo and Siena (family 19h,
# models A0h..AFh) are Zen 4 parts endorsed on Genoa's line.
_CPUID_PRODUCTS = (
    (0x19, range(0x00, 0x10), MILAN),
    (0x19, range(0x10, 0x20), GENOA),
    (0x19, range(0xA0, 0xB0), GENOA),
    (0x1A, range(0x00, 0x20), TURIN),
)

SIGNING_KEYS = {0: "vcek", 1: "vlek"}

# Guest POLICY bits (ABI 56860, "GUEST_POLICY"). Bits 7:0 are ABI_MINOR, 15:8 ABI_MAJOR.
POLICY_BITS = {
    "smt": 16,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding_dram": 24,
    "page_swap_disable": 25,
}

# PLATFORM_INFO bits the ABI defines. Every other bit is reserved: genuine Turin firmware
# sets bit 6, so reserved bits are reported in the claims and never judged.
PLATFORM_INFO_BITS = {
    "smt_enabled": 0,
    "tsme_enabled": 1,
    "ecc_enabled": 2,
    "rapl_disabled": 3,
    "ciphertext_hiding_dram_enabled": 4,
    "alias_check_complete": 5,
    "tio_enabled": 7,
}
_PLATFORM_INFO_KNOWN = sum(1 << bit for bit in PLATFORM_INFO_BITS.values())


class ReportError(ValueError):
    """The evidence is not a well-formed report or certificate table."""

    def __init__(self, message: str, code: FailureCode = FailureCode.MALFORMED_EVIDENCE):
        super().__init__(message)
        self.code = code


def product_of_cpuid(family: int, model: int) -> str | None:
    """The KDS product line of a CPUID family and model, or None if we know none."""
    for known_family, models, product in _CPUID_PRODUCTS:
        if family == known_family and model in models:
            return product
    return None


@dataclass(frozen=True)
class Tcb:
    """A TCB_VERSION, decoded in its product's layout.

    Milan and Genoa: byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode. Turin: byte 0 FMC
    (the first mutable firmware), 1 boot loader, 2 TEE, 3 SNP, 7 microcode; `fmc` is None
    on the older products, which have no such component.
    """

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    @classmethod
    def from_raw(cls, raw: int, *, turin: bool) -> Tcb:
        parts = raw.to_bytes(8, "little")
        if turin:
            return cls(
                raw,
                bootloader=parts[1],
                tee=parts[2],
                snp=parts[3],
                microcode=parts[7],
                fmc=parts[0],
            )
        return cls(raw, bootloader=parts[0], tee=parts[1], snp=parts[6], microcode=parts[7])

    def components(self) -> dict[str, int]:
        """The security patch levels by name (`fmc` only where the product has one)."""
        levels = {"fmc": self.fmc} if self.fmc is not None else {}
        levels.update(
            bootloader=self.bootloader, tee=self.tee, snp=self.snp, microcode=self.microcode
        )
        return levels

    def to_dict(self) -> dict[str, Any]:
        return {"raw": f"{self.raw:016x}", **self.components()}


@dataclass(frozen=True)
class SnpReport:
    """Every field of an attestation report, parsed without verification."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: Tcb
    platform_info: int
    author_key_en: bool
    mask_chip_key: bool
    signing_key: str
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: Tcb
    cpuid: tuple[int, int, int] | None
    product: str | None
    chip_id: bytes
    committed_tcb: Tcb
    current_firmware: tuple[int, int, int]
    committed_firmware: tuple[int, int, int]
    launch_tcb: Tcb
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    def policy_bit(self, name: str) -> bool:
        return bool(self.policy >> POLICY_BITS[name] & 1)

    def platform_info_bit(self, name: str) -> bool:
        return bool(self.platform_info >> PLATFORM_INFO_BITS[name] & 1)

    @property
    def debug_allowed(self) -> bool:
        return self.policy_bit("debug")

    @property
    def abi(self) -> tuple[int, int]:
        """The minimum firmware ABI (major, minor) the guest owner asked for at launch."""
        return (self.policy >> 8 & 0xFF, self.policy & 0xFF)

    @property
    def is_turin(self) -> bool:
        return self.product == TURIN

    @property
    def current_version(self) -> str:
        return ".".join(map(str, self.current_firmware))

    @property
    def committed_version(self) -> str:
        return ".".join(map(str, self.committed_firmware))

    @classmethod
    def parse(cls, data: bytes) -> SnpReport:
        if len(data) != REPORT_SIZE:
            raise ReportError(f"SNP report must be {REPORT_SIZE} bytes, got {len(data)}")
        version = _u32(data, 0x00)
        if version not in SUPPORTED_VERSIONS:
            raise ReportError(
                f"SNP report version {version} is not supported "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})",
                FailureCode.UNSUPPORTED_VERSION,
            )
        signature_algo = _u32(data, 0x34)
        if signature_algo != 1:
            raise ReportError(
                f"SNP signature algorithm {signature_algo} is not ECDSA P-384/SHA-384",
                FailureCode.UNSUPPORTED_VERSION,
            )
        key_info = _u32(data, 0x48)
        signing_key_field = key_info >> 2 & 0b111
        if signing_key_field not in SIGNING_KEYS:
            raise ReportError(f"SNP report SIGNING_KEY {signing_key_field} is not VCEK or VLEK")
        cpuid = None
        product = None
        if version >= 3:
            cpuid = (data[0x188], data[0x189], data[0x18A])
            product = product_of_cpuid(cpuid[0], cpuid[1])
            if product is None:
                raise ReportError(
                    f"CPUID family {cpuid[0]:#x} model {cpuid[1]:#x} is no AMD product this "
                    "verifier knows (Milan, Genoa, Turin)",
                    FailureCode.UNKNOWN_PRODUCT,
                )
        turin = product == TURIN

        def tcb(offset: int) -> Tcb:
            return Tcb.from_raw(_u64(data, offset), turin=turin)

        return cls(
            raw=bytes(data),
            version=version,
            guest_svn=_u32(data, 0x04),
            policy=_u64(data, 0x08),
            family_id=data[0x10:0x20],
            image_id=data[0x20:0x30],
            vmpl=_u32(data, 0x30),
            signature_algo=signature_algo,
            current_tcb=tcb(0x38),
            platform_info=_u64(data, 0x40),
            author_key_en=bool(key_info & 1),
            mask_chip_key=bool(key_info >> 1 & 1),
            signing_key=SIGNING_KEYS[signing_key_field],
            report_data=data[0x50:0x90],
            measurement=data[0x90:0xC0],
            host_data=data[0xC0:0xE0],
            id_key_digest=data[0xE0:0x110],
            author_key_digest=data[0x110:0x140],
            report_id=data[0x140:0x160],
            report_id_ma=data[0x160:0x180],
            reported_tcb=tcb(0x180),
            cpuid=cpuid,
            product=product,
            chip_id=data[0x1A0:0x1E0],
            committed_tcb=tcb(0x1E0),
            current_firmware=(data[0x1EA], data[0x1E9], data[0x1E8]),
            committed_firmware=(data[0x1EE], data[0x1ED], data[0x1EC]),
            launch_tcb=tcb(0x1F0),
            launch_mit_vector=_u64(data, 0x1F8) if version >= 5 else None,
            current_mit_vector=_u64(data, 0x200) if version >= 5 else None,
            signature_r=int.from_bytes(data[0x2A0:0x2E8], "little"),
            signature_s=int.from_bytes(data[0x2E8:0x330], "little"),
        )

    def claims(self) -> dict[str, Any]:
        """Every field of the report as a JSON-serialisable dict."""
        reserved = self.platform_info & ~_PLATFORM_INFO_KNOWN
        return {
            "tee_type": str(TeeType.SEV_SNP),
            "confidential": True,
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": {
                "raw": f"{self.policy:016x}",
                "abi_minor": self.abi[1],
                "abi_major": self.abi[0],
                **{name: self.policy_bit(name) for name in POLICY_BITS},
            },
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "current_tcb": self.current_tcb.to_dict(),
            "platform_info": f"{self.platform_info:016x}",
            "platform_info_bits": {
                **{name: self.platform_info_bit(name) for name in PLATFORM_INFO_BITS},
                "reserved": f"{reserved:#x}",
            },
            "author_key_en": self.author_key_en,
            "mask_chip_key": self.mask_chip_key,
            "signing_key": self.signing_key,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "reported_tcb": self.reported_tcb.to_dict(),
            "cpuid": (
                {
                    "family": self.cpuid[0],
                    "model": self.cpuid[1],
                    "stepping": self.cpuid[2],
                    "product": self.product,
                }
                if self.cpuid
                else None
            ),
            "chip_id": self.chip_id.hex(),
            "committed_tcb": self.committed_tcb.to_dict(),
            "current_version": self.current_version,
            "committed_version": self.committed_version,
            "launch_tcb": self.launch_tcb.to_dict(),
            "launch_mit_vector": _hex_or_none(self.launch_mit_vector),
            "current_mit_vector": _hex_or_none(self.current_mit_vector),
            "signature": {"r": f"{self.signature_r:096x}", "s": f"{self.signature_s:096x}"},
        }


def _hex_or_none(value: int | None) -> str | None:
    return None if value is None else f"{value:016x}"


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")
