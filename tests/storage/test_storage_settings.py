"""S3Settings and ObjectRef: pure logic, no server needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack
import pytest

from storage import ObjectRef, S3Settings, StorageError, StorageUnavailable
from storage import errors as storage_errors

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "s3cr3t-value-never-printed"


def test_repr_hides_secret() -> None:
    settings = S3Settings(access_key="AKIA-visible", secret_key=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "AKIA-visible" in repr(settings)


def test_from_env_defaults() -> None:
    settings = S3Settings.from_env({})
    assert settings.endpoint == "127.0.0.1:9000"
    assert settings.bucket == "shoal"
    assert settings.intermediate_ttl_days == 1
    assert settings.secure is False
    assert (settings.access_key, settings.secret_key) == ("", "")


def test_from_env_shoal_variables() -> None:
    settings = S3Settings.from_env(
        {
            "SHOAL_S3_ENDPOINT": "https://s3.example.com:9443/",
            "SHOAL_S3_ACCESS_KEY": "ak",
            "SHOAL_S3_SECRET_KEY": SECRET,
            "SHOAL_S3_REGION": "eu-west-1",
            "SHOAL_S3_BUCKET": "models",
            "SHOAL_S3_CONNECT_TIMEOUT": "0.5",
            "SHOAL_S3_MAX_RETRIES": "0",
        }
    )
    assert settings.endpoint == "s3.example.com:9443"
    assert settings.secure is True
    assert (settings.access_key, settings.secret_key) == ("ak", SECRET)
    assert (settings.region, settings.bucket) == ("eu-west-1", "models")
    assert (settings.connect_timeout, settings.max_retries) == (0.5, 0)
    assert SECRET not in repr(settings)


def test_explicit_secure_overrides_scheme() -> None:
    env = {"SHOAL_S3_ENDPOINT": "https://minio:9000", "SHOAL_S3_SECURE": "false"}
    assert S3Settings.from_env(env).secure is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_ACCESS_KEY_ID": "aws-ak", "AWS_SECRET_ACCESS_KEY": "aws-sk"}, ("aws-ak", "aws-sk")),
        ({"MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "rootpw"}, ("root", "rootpw")),
        (
            {
                "SHOAL_S3_ACCESS_KEY": "shoal-ak",
                "SHOAL_S3_SECRET_KEY": "shoal-sk",
                "AWS_ACCESS_KEY_ID": "aws-ak",
                "AWS_SECRET_ACCESS_KEY": "aws-sk",
            },
            ("shoal-ak", "shoal-sk"),
        ),
    ],
)
def test_credential_fallbacks(env: dict[str, str], expected: tuple[str, str]) -> None:
    settings = S3Settings.from_env(env)
    assert (settings.access_key, settings.secret_key) == expected


def test_credentials_from_secret_files(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("file-user\n")
    (tmp_path / "password").write_text(SECRET + "\n")
    settings = S3Settings.from_env(
        {
            "MINIO_ROOT_USER_FILE": str(tmp_path / "user"),
            "MINIO_ROOT_PASSWORD_FILE": str(tmp_path / "password"),
        }
    )
    assert (settings.access_key, settings.secret_key) == ("file-user", SECRET)


def test_half_a_credential_pair_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be set together"):
        S3Settings.from_env({"SHOAL_S3_ACCESS_KEY": "ak"})


def test_value_and_file_together_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "sk").write_text("x")
    env = {
        "SHOAL_S3_ACCESS_KEY": "ak",
        "SHOAL_S3_SECRET_KEY": "sk",
        "SHOAL_S3_SECRET_KEY_FILE": str(tmp_path / "sk"),
    }
    with pytest.raises(ValueError, match="only one of"):
        S3Settings.from_env(env)


def test_unreadable_secret_file_does_not_leak_contents(tmp_path: Path) -> None:
    env = {"SHOAL_S3_ACCESS_KEY": "ak", "SHOAL_S3_SECRET_KEY_FILE": str(tmp_path / "missing")}
    with pytest.raises(ValueError, match="SHOAL_S3_SECRET_KEY_FILE"):
        S3Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"SHOAL_S3_SECURE": "maybe"},
        {"SHOAL_S3_BUCKET": "ab"},
        {"SHOAL_S3_MAX_RETRIES": "many"},
        {"SHOAL_S3_INTERMEDIATE_TTL_DAYS": "0"},
    ],
)
def test_invalid_env_values(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        S3Settings.from_env(env)


def test_object_ref_wire_round_trip_through_msgpack() -> None:
    ref = ObjectRef("shoal", "intermediates/req-1/stage-0", 123, "ab" * 32)
    wire = ref.to_wire()
    assert all(isinstance(v, str | int) for v in wire.values())
    decoded = msgpack.unpackb(msgpack.packb(wire), raw=False)
    assert ObjectRef.from_wire(decoded) == ref


@pytest.mark.parametrize(
    "wire",
    [
        {"bucket": "b", "key": "k", "size": 1},
        {"bucket": "b", "key": "k", "size": -1, "sha256": "ab" * 32},
        {"bucket": "b", "key": "k", "size": True, "sha256": "ab" * 32},
        {"bucket": "b", "key": "k", "size": 1, "sha256": "not-hex"},
        {"bucket": "b", "key": 5, "size": 1, "sha256": "ab" * 32},
    ],
)
def test_object_ref_rejects_malformed_wire(wire: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ObjectRef.from_wire(wire)


def test_error_codes_are_stable() -> None:
    assert StorageUnavailable.code == "storage_unavailable"
    assert StorageUnavailable.retryable is True
    for name in storage_errors.__all__:
        cls = getattr(storage_errors, name)
        assert issubclass(cls, StorageError)
        assert isinstance(cls.code, str) and cls.code
