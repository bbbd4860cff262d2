"""Unit tests of services.common.config (environment helpers, server settings) and the pure
parts of services.common.database (URL redaction, migration discovery)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import (
    AdmissionSettings,
    DEFAULT_PORTS,
    ServerSettings,
    database_url,
    env_bool,
    env_float,
    env_int,
    env_str,
    model_repository,
    service_address,
)
from services.common.database import migrations, redact

# --- env_str ---------------------------------------------------------------------------------


def test_env_str_returns_stripped_value() -> None:
    assert env_str("SHELFWISE_X", "d", {"SHELFWISE_X": "  value \n"}) == "value"


@pytest.mark.parametrize("environ", [{}, {"SHELFWISE_X": ""}, {"SHELFWISE_X": "   "}])
def test_env_str_uses_default_when_unset_or_blank(environ) -> None:
    assert env_str("SHELFWISE_X", "default", environ) == "default"


def test_env_str_reads_os_environ_when_no_mapping_given(monkeypatch) -> None:
    monkeypatch.setenv("SHELFWISE_UNIT_TEST_VALUE", "from-os")
    assert env_str("SHELFWISE_UNIT_TEST_VALUE", "d") == "from-os"


def test_env_str_empty_mapping_does_not_fall_back_to_os_environ(monkeypatch) -> None:
    monkeypatch.setenv("SHELFWISE_UNIT_TEST_VALUE", "from-os")
    assert env_str("SHELFWISE_UNIT_TEST_VALUE", "d", {}) == "d"


# --- env_int ---------------------------------------------------------------------------------


def test_env_int_parses_and_defaults() -> None:
    assert env_int("SHELFWISE_N", 7, {"SHELFWISE_N": " 42 "}) == 42
    assert env_int("SHELFWISE_N", 7, {}) == 7
    assert env_int("SHELFWISE_N", 7, {"SHELFWISE_N": "-3"}) == -3


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "ten"])
def test_env_int_rejects_non_integer_naming_the_variable(raw) -> None:
    with pytest.raises(ValueError) as caught:
        env_int("SHELFWISE_N", 7, {"SHELFWISE_N": raw})
    assert "SHELFWISE_N" in str(caught.value)
    assert "not an integer" in str(caught.value)


def test_env_int_enforces_minimum_naming_the_variable() -> None:
    assert env_int("SHELFWISE_N", 7, {"SHELFWISE_N": "1"}, minimum=1) == 1
    with pytest.raises(ValueError) as caught:
        env_int("SHELFWISE_N", 7, {"SHELFWISE_N": "0"}, minimum=1)
    assert "SHELFWISE_N" in str(caught.value) and ">= 1" in str(caught.value)


# --- env_float -------------------------------------------------------------------------------


def test_env_float_parses_and_defaults() -> None:
    assert env_float("SHELFWISE_F", 0.5, {"SHELFWISE_F": "2.25"}) == 2.25
    assert env_float("SHELFWISE_F", 0.5, {"SHELFWISE_F": "3"}) == 3.0
    assert env_float("SHELFWISE_F", 0.5, {}) == 0.5


@pytest.mark.parametrize("raw", ["abc", "1,5", "fast"])
def test_env_float_rejects_non_number_naming_the_variable(raw) -> None:
    with pytest.raises(ValueError) as caught:
        env_float("SHELFWISE_F", 0.5, {"SHELFWISE_F": raw})
    assert "SHELFWISE_F" in str(caught.value)
    assert "not a number" in str(caught.value)


def test_env_float_enforces_minimum_naming_the_variable() -> None:
    with pytest.raises(ValueError) as caught:
        env_float("SHELFWISE_F", 0.5, {"SHELFWISE_F": "-0.1"}, minimum=0.0)
    assert "SHELFWISE_F" in str(caught.value)


# --- env_bool --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_env_bool_true_values(raw) -> None:
    assert env_bool("SHELFWISE_B", False, {"SHELFWISE_B": raw}) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF"])
def test_env_bool_false_values(raw) -> None:
    assert env_bool("SHELFWISE_B", True, {"SHELFWISE_B": raw}) is False


def test_env_bool_defaults() -> None:
    assert env_bool("SHELFWISE_B", True, {}) is True
    assert env_bool("SHELFWISE_B", False, {"SHELFWISE_B": ""}) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y"])
def test_env_bool_rejects_other_values_naming_the_variable(raw) -> None:
    with pytest.raises(ValueError) as caught:
        env_bool("SHELFWISE_B", True, {"SHELFWISE_B": raw})
    assert "SHELFWISE_B" in str(caught.value)


# --- ServerSettings --------------------------------------------------------------------------


def test_server_settings_defaults() -> None:
    settings = ServerSettings.from_env("gateway", {})
    assert settings == ServerSettings(
        service="gateway",
        host="127.0.0.1",
        port=50051,
        max_message_bytes=1024 * 1024,  # what the gateway's largest request needs
        shutdown_grace_seconds=5.0,
        admission=AdmissionSettings(min_limit=1, initial_limit=20),  # starts at 20, sheds down to one search at a time
    )


@pytest.mark.parametrize("service", sorted(DEFAULT_PORTS))
def test_server_settings_default_port_per_service(service) -> None:
    assert ServerSettings.from_env(service, {}).port == DEFAULT_PORTS[service]


def test_server_settings_overrides() -> None:
    settings = ServerSettings.from_env(
        "gateway",
        {
            "SHELFWISE_GATEWAY_HOST": "0.0.0.0",
            "SHELFWISE_GATEWAY_PORT": "0",
            "SHELFWISE_MAX_MESSAGE_BYTES": "8388608",
            "SHELFWISE_SHUTDOWN_GRACE_SECONDS": "0.5",
        },
    )
    assert (settings.host, settings.port, settings.max_message_bytes, settings.shutdown_grace_seconds) == (
        "0.0.0.0",
        0,
        8 * 1024 * 1024,
        0.5,
    )


def test_server_settings_shared_host_applies_unless_service_host_is_set() -> None:
    assert ServerSettings.from_env("gateway", {"SHELFWISE_HOST": "10.0.0.1"}).host == "10.0.0.1"
    both = {"SHELFWISE_HOST": "10.0.0.1", "SHELFWISE_GATEWAY_HOST": "10.0.0.2"}
    assert ServerSettings.from_env("gateway", both).host == "10.0.0.2"


def test_server_settings_other_services_port_does_not_apply() -> None:
    assert ServerSettings.from_env("gateway", {"SHELFWISE_RANKING_PORT": "9"}).port == 50051


@pytest.mark.parametrize(
    "environ, variable",
    [
        ({"SHELFWISE_GATEWAY_PORT": "http"}, "SHELFWISE_GATEWAY_PORT"),
        ({"SHELFWISE_GATEWAY_PORT": "-1"}, "SHELFWISE_GATEWAY_PORT"),
        ({"SHELFWISE_MAX_MESSAGE_BYTES": "100"}, "SHELFWISE_MAX_MESSAGE_BYTES"),
        ({"SHELFWISE_SHUTDOWN_GRACE_SECONDS": "soon"}, "SHELFWISE_SHUTDOWN_GRACE_SECONDS"),
        ({"SHELFWISE_SHUTDOWN_GRACE_SECONDS": "-1"}, "SHELFWISE_SHUTDOWN_GRACE_SECONDS"),
    ],
)
def test_server_settings_reject_bad_values_naming_the_variable(environ, variable) -> None:
    with pytest.raises(ValueError) as caught:
        ServerSettings.from_env("gateway", environ)
    assert variable in str(caught.value)


def test_server_settings_unknown_service_fails() -> None:
    with pytest.raises(KeyError):
        ServerSettings.from_env("billing", {})


# --- addresses, database URL, model repository -----------------------------------------------


def test_service_address_default_and_override() -> None:
    assert service_address("ranking", {}) == "127.0.0.1:50054"
    assert service_address("ranking", {"SHELFWISE_RANKING_ADDRESS": "ranking:9000"}) == "ranking:9000"


def test_database_url_is_read_when_set() -> None:
    url = "postgresql://shop:pw@db:5432/shelfwise"
    assert database_url({"SHELFWISE_DATABASE_URL": f" {url} "}) == url


@pytest.mark.parametrize("environ", [{}, {"SHELFWISE_DATABASE_URL": ""}, {"SHELFWISE_DATABASE_URL": "  "}])
def test_database_url_raises_when_unset(environ) -> None:
    with pytest.raises(ValueError) as caught:
        database_url(environ)
    assert "SHELFWISE_DATABASE_URL" in str(caught.value)


def test_model_repository_is_resolved_absolute_path(tmp_path) -> None:
    assert model_repository({"SHELFWISE_MODEL_REPOSITORY": str(tmp_path / "models")}) == tmp_path / "models"
    default = model_repository({})
    assert default.is_absolute() and default.name == "model_repository"
    assert default == Path("model_repository").resolve()


def test_retrieval_routes_between_an_english_and_a_multilingual_space_unless_told_otherwise() -> None:
    from services.retrieval.config import RetrievalSettings

    environ = {"SHELFWISE_DATABASE_URL": "postgresql://localhost/shelfwise"}
    default = RetrievalSettings.from_env(environ)
    assert (default.text_encoder, default.multilingual_encoder) == ("text_encoder", "text_encoder_use")
    # A catalogue that is not in English: one multilingual space.
    one = RetrievalSettings.from_env(
        {**environ, "SHELFWISE_TEXT_ENCODER": "text_encoder_use", "SHELFWISE_MULTILINGUAL_ENCODER": "none"}
    )
    assert (one.text_encoder, one.multilingual_encoder) == ("text_encoder_use", None)
    same = RetrievalSettings.from_env({**environ, "SHELFWISE_MULTILINGUAL_ENCODER": "text_encoder"})
    assert same.multilingual_encoder is None
    with pytest.raises(ValueError, match="SHELFWISE_MULTILINGUAL_ENCODER"):
        RetrievalSettings.from_env({**environ, "SHELFWISE_MULTILINGUAL_ENCODER": "../models"})


# --- database: redact and migrations ---------------------------------------------------------


def test_redact_hides_the_password() -> None:
    redacted = redact("postgresql://shop:s3cret@db.internal:5432/shelfwise?sslmode=require")
    assert "s3cret" not in redacted
    assert redacted == "postgresql://shop:***@db.internal:5432/shelfwise?sslmode=require"


def test_redact_hides_password_containing_at_sign() -> None:
    redacted = redact("postgresql://shop:p@ss@db:5432/shelfwise")
    assert "p@ss" not in redacted and "ss@" not in redacted
    assert redacted == "postgresql://shop:***@db:5432/shelfwise"


def test_redact_hides_password_given_as_query_parameter() -> None:
    assert "s3cret" not in redact("postgresql://db:5432/shelfwise?user=shop&password=s3cret")


@pytest.mark.parametrize("url", ["postgresql://localhost:5432/shelfwise", "not a url", "user@host"])
def test_redact_leaves_urls_without_credentials_unchanged(url) -> None:
    assert redact(url) == url


def test_migrations_lists_0001_and_0002_in_order() -> None:
    found = migrations()
    assert [(version, name) for version, name, _ in found][:2] == [(1, "0001_catalog.sql"), (2, "0002_events.sql")]
    versions = [version for version, _, _ in found]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert all(sql.strip() for _, _, sql in found)


def test_pass_through_commands_hand_every_option_on_including_help(capsys):
    from services.cli.main import main

    for argv, usage in (
        (["export", "--help"], "python -m training.encoders.export"),
        (["train", "encoder", "--help"], "shelfwise train encoder"),
        (["eval", "query-understanding", "--help"], "shelfwise eval query-understanding"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        assert usage in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["search", "tea", "--bogus"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
