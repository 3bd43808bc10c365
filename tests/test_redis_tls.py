"""Issue 19: the Redis steps against a target that needs AUTH and TLS, as ElastiCache does with in-transit
encryption and an AUTH token: a real redis-server with a TLS port (certificates made by the test) and a password."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.localservers import LocalRedis, free_port, start_redis
from migrate.config import EnvConfig, RedisEndpoint
from migrate.testing import make_context
from phases.p2_data.redis_migrate import RedisMigrate
from phases.p2_data.redis_verify import RedisVerify

PASSWORD_ENV = "BPM_TEST_REDIS_TLS_PASSWORD"
PASSWORD = "tls-and-auth-s3cret"  # test-only value, never a real credential


@dataclass
class TlsRedis:
    server: LocalRedis
    tls_port: int
    ca_file: Path


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bpmigrate test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def redis_tls(servers_root: Path) -> Iterator[TlsRedis]:
    import redis

    ca_file, cert_file, key_file = _certificates(servers_root / "redis-tls-certs")
    tls_port = free_port()
    tls_args = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
                "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no"]
    server = start_redis(servers_root / "redis-tls", extra_args=lambda _port: tls_args)
    # the password is set once the server answers (the launcher's readiness probe speaks plain, unauthenticated RESP)
    redis.Redis(host=server.host, port=server.port).config_set("requirepass", PASSWORD)
    yield TlsRedis(server, tls_port, ca_file)
    server.stop()


def test_redis_steps_with_auth_and_tls(
    tmp_path: Path, redis_tls: TlsRedis, fresh_redis: Any, redis_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    env = EnvConfig(
        name="sandbox",
        kind="sandbox",
        redis={
            "source": RedisEndpoint(host=redis_source.host, port=redis_source.port),
            "target": RedisEndpoint(host="127.0.0.1", port=redis_tls.tls_port, tls=True, tls_ca_file=str(redis_tls.ca_file),
                                    password_env=PASSWORD_ENV),
        },
    )
    source = redis.Redis(host=redis_source.host, port=redis_source.port, db=1)
    source.set("session:1", "alice", ex=3600)
    source.hset("session:2", mapping={"user": "bob"})
    redis.Redis(host=redis_source.host, port=redis_source.port, db=0).set("cache:x", "1")

    step = RedisMigrate()
    ctx = make_context(tmp_path, env, step.id, settings={"batch": 10})
    out = step.apply(ctx)
    assert set(out["method"].values()) == {"dump"}, "MIGRATE cannot speak TLS: the copy goes through bpmigrate"
    assert all(c.ok for c in step.verify(make_context(tmp_path, env, step.id, settings={"batch": 10})))
    verified = RedisVerify().apply(make_context(tmp_path, env, "redis-verify", settings={"sample": 0}))
    assert verified["keys_compared"] == 3

    target = redis.Redis(host="127.0.0.1", port=redis_tls.tls_port, ssl=True, ssl_ca_certs=str(redis_tls.ca_file),
                         password=PASSWORD, db=1)
    assert target.get("session:1") == b"alice" and 0 < target.ttl("session:1") <= 3600
    # the password never reaches the step's outputs
    assert PASSWORD not in repr(out)
    # without the password the target refuses: the AUTH is real
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=redis_tls.tls_port, ssl=True, ssl_ca_certs=str(redis_tls.ca_file), db=1).get("x")
