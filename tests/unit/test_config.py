"""Settings: credentials read lazily from the local stack's files, never printed, required in production."""

from pathlib import Path

import pytest

from astraforge.config import KAFKA_PASSWORD_FILE, POSTGRES_PASSWORD_FILE, Settings, get_settings
from astraforge.errors import ConfigError
from astraforge.kafka import client_config

PG_SECRET = "a" * 64
KAFKA_SECRET = "b" * 64


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch) -> None:
    """Only what a test passes counts (not the developer's shell)."""
    import os

    for name in list(os.environ):
        if name.startswith("ASTRAFORGE_"):
            monkeypatch.delenv(name)


def write_secrets(state_dir: Path) -> None:
    for name, value in ((POSTGRES_PASSWORD_FILE, PG_SECRET), (KAFKA_PASSWORD_FILE, KAFKA_SECRET)):
        (state_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (state_dir / name).write_text(value + "\n")


def test_development_reads_the_local_stack_credentials_when_a_client_is_built(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, pg_port=25432, kafka_port=29092)
    # no files yet: unauthenticated, and the hint names the files
    assert settings.database_dsn() == "postgresql://astraforge@127.0.0.1:25432/astraforge"
    assert client_config(settings)["security.protocol"] == "PLAINTEXT"
    assert str(tmp_path / POSTGRES_PASSWORD_FILE) in settings.missing_credentials("postgres")
    assert str(tmp_path / KAFKA_PASSWORD_FILE) in settings.missing_credentials("kafka")

    write_secrets(tmp_path)  # the stack started after the settings were built
    assert settings.database_dsn() == f"postgresql://astraforge:{PG_SECRET}@127.0.0.1:25432/astraforge"
    config = client_config(settings)
    assert config["bootstrap.servers"] == "127.0.0.1:29092"
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (config["sasl.username"], config["sasl.password"]) == ("astraforge", KAFKA_SECRET)
    assert settings.missing_credentials("postgres") is None and settings.missing_credentials("kafka") is None


def test_secrets_stay_out_of_the_repr_but_reach_a_child_process(tmp_path: Path, monkeypatch) -> None:
    url = f"postgresql://app:{PG_SECRET}@db:5432/app"
    settings = Settings(
        state_dir=tmp_path, database_url=url, kafka_sasl_username="app", kafka_sasl_password=KAFKA_SECRET
    )
    assert PG_SECRET not in repr(settings) and KAFKA_SECRET not in repr(settings)
    assert KAFKA_SECRET not in repr(settings.kafka_credentials())
    env = settings.as_env()
    assert env["ASTRAFORGE_DATABASE_URL"] == url and env["ASTRAFORGE_KAFKA_SASL_PASSWORD"] == KAFKA_SECRET
    for name, value in env.items():  # what the child process sees
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.database_dsn() == url and child.kafka_credentials() == settings.kafka_credentials()


def test_local_defaults_are_not_handed_down_as_values(tmp_path: Path) -> None:
    """A child gets the state dir and reads the files itself (a rotated password is picked up)."""
    write_secrets(tmp_path)
    env = Settings(state_dir=tmp_path).as_env()
    assert not {"ASTRAFORGE_DATABASE_URL", "ASTRAFORGE_KAFKA_SASL_PASSWORD"} & env.keys()
    assert env["ASTRAFORGE_STATE_DIR"] == str(tmp_path)


def test_production_refuses_to_start_without_explicit_credentials(tmp_path: Path) -> None:
    write_secrets(tmp_path)  # a dev stack's files are never a production default
    with pytest.raises(ValueError, match=r"ASTRAFORGE_DATABASE_URL.*ASTRAFORGE_KAFKA_SASL_USERNAME"):
        Settings(env="production", state_dir=tmp_path)
    kafka = {"kafka_sasl_username": "app", "kafka_sasl_password": KAFKA_SECRET}
    with pytest.raises(ValueError, match="password of a non-superuser role"):
        Settings(env="production", state_dir=tmp_path, database_url="postgresql://app@db/app", **kafka)
    with pytest.raises(ValueError, match="ASTRAFORGE_KAFKA_SASL_USERNAME"):
        Settings(env="production", state_dir=tmp_path, database_url=f"postgresql://app:{PG_SECRET}@db/app")
    settings = Settings(env="production", database_url=f"host=db user=app password={PG_SECRET}", **kafka)
    assert client_config(settings)["sasl.username"] == "app"


def test_get_settings_reports_a_config_error(monkeypatch) -> None:
    """The CLI prints an ``AstraForgeError`` as one line: a bad setting must be one."""
    monkeypatch.setenv("ASTRAFORGE_ENV", "production")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="production needs explicit credentials"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_a_username_without_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        Settings(kafka_sasl_username="app")


def test_images_a_create_may_name_are_the_operators(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ASTRAFORGE_SANDBOX_IMAGES", '["corp/python:3.12"]')
    monkeypatch.setenv("ASTRAFORGE_WARM_POOLS", '[{"size": 1, "image": "corp/node:22"}, {"size": 1}]')
    s = Settings(state_dir=tmp_path)
    assert s.allowed_images == ["astraforge/sandbox:bookworm", "corp/python:3.12", "corp/node:22"]
