"""A stand-in for AMD's key hierarchy, for what no genuine data can show.

It is a fake on purpose: AMD's keys cannot sign test data, and two things have no public
genuine evidence — a report signed with a Genoa or Turin VLEK (AWS and others have not
published one) and an AMD CRL that revokes an ASK. `FakeAmd` builds an ARK, an ASK or
ASVK and a VCEK/VLEK shaped like AMD's (RSA-PSS SHA-384 with salt 48, the KDS
extensions), signs a genuine report's bytes again with its leaf key, and
issues CRLs. Tests install it with `install(monkeypatch)`, which replaces only
`roots.amd_chain` for this fake's issuer names: the code under test is otherwise the
real verifier, and genuine chains stay pinned.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from inference.attestation import roots

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
AMD_OID = "1.3.6.1.4.1.3704.1"
START = datetime.fromisoformat("2020-01-01T00:00:00+00:00")
END = datetime.fromisoformat("2040-01-01T00:00:00+00:00")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode("ascii")


def _extension(suffix: str, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{AMD_OID}.{suffix}"), value)


class FakeAmd:
    """An ARK and an intermediate for one product line and kind of key ("vcek"/"vlek")."""

    def __init__(self, product: str, signing_key: str) -> None:
        self.product = product
        self.signing_key = signing_key
        self.ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ark = self._certificate(
            f"ARK-{product}", self.ark_key.public_key(), f"ARK-{product}", self.ark_key, 1
        )
        self.issuer_name = f"SEV-VLEK-{product}" if signing_key == "vlek" else f"SEV-{product}"
        self.intermediate = self._certificate(
            self.issuer_name, self.intermediate_key.public_key(), f"ARK-{product}", self.ark_key, 2
        )

    def _certificate(self, subject, public_key, issuer, signer, serial, extensions=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(START)
            .not_valid_after(END)
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)

    def leaf(
        self, tcb: dict[str, int], *, hwid: bytes | None = None, product_name: str | None = None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A VCEK/VLEK for `tcb`, with KDS extensions (serial 3: cryptography cannot issue
        AMD's serial 0)."""
        key = ec.generate_private_key(ec.SECP384R1())
        oids = {"fmc": "3.9", "bootloader": "3.1", "tee": "3.2", "snp": "3.3", "microcode": "3.8"}
        extensions = [_extension("2", _ia5(product_name or self.product))]
        extensions += [_extension(oids[name], _der_integer(level)) for name, level in tcb.items()]
        if hwid is not None:
            extensions.append(_extension("4", hwid))
        if self.signing_key == "vlek":
            extensions.append(_extension("5", _ia5("csp.example")))
        name = "SEV-VLEK" if self.signing_key == "vlek" else "SEV-VCEK"
        return (
            self._certificate(
                name, key.public_key(), self.issuer_name, self.intermediate_key, 3, extensions
            ),
            key,
        )

    def chain(self) -> roots.AmdChain:
        return roots.AmdChain(self.product, self.signing_key, self.intermediate, self.ark)

    def crl(
        self, *, revoked: list[int], this_update: datetime, days: int = 30, signer=None
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ark.subject)
            .last_update(this_update)
            .next_update(this_update + timedelta(days=days))
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .build()
            )
        crl = builder.sign(signer or self.ark_key, hashes.SHA384(), rsa_padding=PSS)
        return crl.public_bytes(Encoding.DER)

    def install(self, monkeypatch) -> None:
        """Make the verifier trust this fake for its own issuer name only."""
        genuine = roots.amd_chain

        def amd_chain(issuer_common_name: str):
            if issuer_common_name == self.issuer_name:
                return self.chain()
            return genuine(issuer_common_name)

        monkeypatch.setattr(roots, "amd_chain", amd_chain)


def resign(report: bytes, key: ec.EllipticCurvePrivateKey, *, signing_key: str) -> bytes:
    """A report's bytes with SIGNING_KEY set and a fresh signature by `key` (R, S as 72-byte
    little-endian numbers at 0x2A0 and 0x2E8)."""
    data = bytearray(report)
    key_info = struct.unpack_from("<I", data, 0x48)[0] & ~(0b111 << 2)
    key_info |= (1 if signing_key == "vlek" else 0) << 2
    struct.pack_into("<I", data, 0x48, key_info)
    if signing_key == "vlek":
        data[0x1A0:0x1E0] = bytes(64)  # VLEK-signed reports carry no chip id
    r, s = decode_dss_signature(key.sign(bytes(data[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    data[0x2A0:0x2E8] = r.to_bytes(72, "little")
    data[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(data)
