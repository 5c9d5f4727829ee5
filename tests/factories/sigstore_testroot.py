"""A private Sigstore instance for offline tests: a Fulcio-like CA, a CT log and a Rekor-like log.

``PrivateSigstore`` writes a ``trusted_root.json`` (TrustedRoot v0.1) naming its own CA certificate, CT log key
and transparency log key, and signs "keyless" bundles under it the way Fulcio + CT + Rekor v1 would:

* a short-lived leaf certificate for an ephemeral ECDSA P-256 key, with the identity as SAN (email or
  URI), the OIDC issuer in Fulcio's extensions (1.3.6.1.4.1.57264.1.1 raw, .1.8 DER UTF8String), and an
  embedded precertificate SCT signed by the CT log key (RFC 6962 section 3.2);
* a hashedrekord v0.0.1 log entry for the signature, placed among filler leaves of an RFC 6962 Merkle
  tree, with an inclusion proof, a checkpoint signed as a note, and a signed entry timestamp (SET).

Keys derive from a label so runs are reproducible; times are fixed in the past (verification judges the
certificate at the log's integration time, as with real Sigstore), so no test depends on the clock.
Nothing here talks to a network: every URL ends in ``.invalid``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RELEASE_IDENTITY = "https://github.com/example/kitbuilder/.github/workflows/release.yml@refs/heads/main"

OID_FULCIO_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_FULCIO_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OID_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")

# The instance's lifetime and one signing event inside it; all in the past, all fixed.
ROOT_START = datetime(2024, 1, 1, tzinfo=UTC)
ROOT_END = datetime(2034, 1, 1, tzinfo=UTC)
SIGNED_AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
FILLER_LEAVES = 5  # entries before ours, so the inclusion proof has real hashes in it


def _derive_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(f"kitbuilder-sigstore-{label}".encode()).digest(), "big") % (2**255)
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# RFC 6962 section 2.1 Merkle tree hashing and audit paths.
def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return _leaf_hash(leaves[0])
    k = _split(len(leaves))
    return _node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """Audit path for leaf ``index``, lowest level first."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_path(index, leaves[:k]), merkle_root(leaves[k:])]
    return [*inclusion_path(index - k, leaves[k:]), merkle_root(leaves[:k])]


def _general_name(identity: str) -> x509.GeneralName:
    if "://" not in identity and "@" in identity:
        return x509.RFC822Name(identity)
    return x509.UniformResourceIdentifier(identity)


@dataclass(frozen=True)
class KeylessSignature:
    bundle: bytes
    certificate: x509.Certificate
    log_index: int
    integrated_time: datetime


@dataclass(frozen=True)
class PrivateSigstore:
    """One private Sigstore instance; ``label`` makes two instances with unrelated keys."""

    label: str

    @property
    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        return _derive_key(f"{self.label}-fulcio")

    @property
    def ct_key(self) -> ec.EllipticCurvePrivateKey:
        return _derive_key(f"{self.label}-ctlog")

    @property
    def tlog_key(self) -> ec.EllipticCurvePrivateKey:
        return _derive_key(f"{self.label}-rekor")

    @property
    def ca_name(self) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kitbuilder tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{self.label} fulcio"),
            ]
        )

    @property
    def ca_certificate(self) -> x509.Certificate:
        public = self.ca_key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public)
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.ca_name)
            .issuer_name(self.ca_name)
            .public_key(public)
            .serial_number(int.from_bytes(hashlib.sha256(f"{self.label}-ca".encode()).digest()[:16], "big"))
            .not_valid_before(ROOT_START)
            .not_valid_after(ROOT_END)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
        )
        return builder.sign(self.ca_key, hashes.SHA256())

    def log_id(self, key: ec.EllipticCurvePrivateKey) -> bytes:
        return hashlib.sha256(_spki(key.public_key())).digest()

    @property
    def origin(self) -> str:
        return f"{self.label}.rekor.invalid - 1"

    def trusted_root(self) -> bytes:
        """The TrustedRoot v0.1 JSON a verifier pins to trust this instance (and nothing else)."""

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, object]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key.public_key())),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": _iso(ROOT_START)},
                },
                "logId": {"keyId": _b64(self.log_id(key))},
            }

        ca_der = self.ca_certificate.public_bytes(serialization.Encoding.DER)
        document = {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [log(self.tlog_key, f"https://{self.label}.rekor.invalid")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "kitbuilder tests", "commonName": f"{self.label} fulcio"},
                    "uri": f"https://{self.label}.fulcio.invalid",
                    "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]},
                    "validFor": {"start": _iso(ROOT_START)},
                }
            ],
            "ctlogs": [log(self.ct_key, f"https://{self.label}.ctfe.invalid")],
            "timestampAuthorities": [],
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    # --- Fulcio + CT log -------------------------------------------------------------------------------

    def _leaf_builder(
        self, public: ec.EllipticCurvePublicKey, identity: str, issuer: str, sct_list: bytes
    ) -> x509.CertificateBuilder:
        ca_public = self.ca_key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_name)
            .public_key(public)
            .serial_number(int.from_bytes(hashlib.sha256(f"{self.label}-{identity}".encode()).digest()[:16], "big"))
            .not_valid_before(SIGNED_AT - timedelta(minutes=1))
            .not_valid_after(SIGNED_AT + timedelta(minutes=9))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
            # Fulcio leaves have an empty subject, so the SAN is critical (RFC 5280 section 4.2.1.6).
            .add_extension(x509.SubjectAlternativeName([_general_name(identity)]), critical=True)
            .add_extension(x509.UnrecognizedExtension(OID_FULCIO_ISSUER_V1, issuer.encode()), critical=False)
            .add_extension(
                x509.UnrecognizedExtension(OID_FULCIO_ISSUER_V2, _der(0x0C, issuer.encode())), critical=False
            )
            # Last, as Fulcio does; the SCT signs the TBS certificate without this extension.
            .add_extension(x509.UnrecognizedExtension(OID_SCT_LIST, _der(0x04, sct_list)), critical=False)
        )

    def _sct(self, tbs_precertificate: bytes, timestamp_ms: int) -> bytes:
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        entry = issuer_key_hash + len(tbs_precertificate).to_bytes(3, "big") + tbs_precertificate
        # digitally-signed struct: version v1, certificate_timestamp, timestamp, precert_entry, entry, no extensions
        signed = struct.pack("!BBQH", 0, 0, timestamp_ms, 1) + entry + struct.pack("!H", 0)
        signature = _sign(self.ct_key, signed)
        # SCT: version, log id, timestamp, extensions<0..2^16-1>, SHA-256 (4) + ECDSA (3), signature<0..2^16-1>
        return (
            struct.pack("!B", 0)
            + self.log_id(self.ct_key)
            + struct.pack("!QH", timestamp_ms, 0)
            + struct.pack("!BBH", 4, 3, len(signature))
            + signature
        )

    @staticmethod
    def _sct_list(sct: bytes) -> bytes:
        serialized = struct.pack("!H", len(sct)) + sct
        return struct.pack("!H", len(serialized)) + serialized

    def issue_certificate(self, public: ec.EllipticCurvePublicKey, *, identity: str, issuer: str) -> x509.Certificate:
        """A Fulcio-style leaf for ``public`` carrying an embedded SCT from this instance's CT log."""
        timestamp_ms = int(SIGNED_AT.timestamp() * 1000)
        # The precertificate TBS does not depend on the SCT's content: sign a placeholder, take its TBS minus
        # the SCT extension, then issue the real certificate with the SCT over exactly that TBS.
        placeholder = self._sct_list(self._sct(b"placeholder", timestamp_ms))
        draft = self._leaf_builder(public, identity, issuer, placeholder).sign(self.ca_key, hashes.SHA256())
        sct = self._sct(draft.tbs_precertificate_bytes, timestamp_ms)
        final = self._leaf_builder(public, identity, issuer, self._sct_list(sct)).sign(self.ca_key, hashes.SHA256())
        assert final.tbs_precertificate_bytes == draft.tbs_precertificate_bytes
        return final

    # --- Rekor ----------------------------------------------------------------------------------------

    def _log_entry(self, body: bytes, integrated_time: int) -> dict[str, object]:
        leaves = [f"{self.label} filler entry {n}".encode() for n in range(FILLER_LEAVES)] + [body]
        index = len(leaves) - 1
        root = merkle_root(leaves)
        note = f"{self.origin}\n{len(leaves)}\n{_b64(root)}\n"
        key_hint = self.log_id(self.tlog_key)[:4]
        checkpoint = (
            note + "\n" + f"\u2014 {self.label}.rekor.invalid {_b64(key_hint + _sign(self.tlog_key, note.encode()))}\n"
        )
        log_id = self.log_id(self.tlog_key)
        # Rekor's signed entry timestamp covers the RFC 8785 form of these four fields; for ASCII strings and
        # integers that is sorted keys without whitespace.
        promise = json.dumps(
            {"body": _b64(body), "integratedTime": integrated_time, "logID": log_id.hex(), "logIndex": index},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return {
            "logIndex": str(index),
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(_sign(self.tlog_key, promise))},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": _b64(root),
                "treeSize": str(len(leaves)),
                "hashes": [_b64(h) for h in inclusion_path(index, leaves)],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }

    # --- the signer -----------------------------------------------------------------------------------

    def sign_keyless(self, message: bytes, *, identity: str, issuer: str = GITHUB_ISSUER) -> KeylessSignature:
        """A v0.3 bundle for ``message`` as a CI job with OIDC ``identity``/``issuer`` would get it."""
        ephemeral = _derive_key(f"{self.label}-ephemeral-{identity}")
        certificate = self.issue_certificate(ephemeral.public_key(), identity=identity, issuer=issuer)
        certificate_der = certificate.public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha256(message).digest()
        signature = _sign(ephemeral, message)
        body = json.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
                    "signature": {
                        "content": _b64(signature),
                        "publicKey": {"content": _b64(certificate.public_bytes(serialization.Encoding.PEM))},
                    },
                },
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        integrated_time = SIGNED_AT + timedelta(seconds=5)
        entry = self._log_entry(body, int(integrated_time.timestamp()))
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(certificate_der)},
                "tlogEntries": [entry],
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                "signature": _b64(signature),
            },
        }
        return KeylessSignature(
            bundle=(json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode(),
            certificate=certificate,
            log_index=int(str(entry["logIndex"])),
            integrated_time=integrated_time,
        )
