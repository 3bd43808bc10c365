"""Self-signed TLS material for in-cluster webhooks (a CA and a serving certificate signed by it).

Used where a controller needs a webhook serving certificate and no cert-manager is installed (the AWS Load Balancer
Controller's Secret ``kube-system/aws-load-balancer-tls``). The private keys are registered for redaction the moment
they exist; only the caller's Kubernetes Secret ever holds them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from migrate.redact import register


@dataclass(frozen=True)
class ServingCert:
    ca_crt: str
    tls_crt: str
    tls_key: str
    not_after: datetime.datetime


def serving_cert(service: str, namespace: str, *, days: int = 3650) -> ServingCert:
    """A CA and a certificate for ``<service>.<namespace>.svc`` (and ``.svc.cluster.local``), PEM-encoded."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bpmigrate {service} webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls_key = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    register(tls_key)
    return ServingCert(ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(), tls_key, not_after)


def certificate_info(pem: str) -> dict[str, Any]:
    """Subject alternative names and expiry of a PEM certificate (for verification)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        names = []
    return {"dns_names": list(names), "not_after": cert.not_valid_after_utc}


def from_config(env: Any, **_: Any) -> Any:
    """Module-level functions only: ``ctx.adapters.get("tls")`` returns this module."""
    import sys

    return sys.modules[__name__]
