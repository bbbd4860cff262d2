"""Caller tokens and security settings: parsing, digests, refusals that say what to send and
never echo a token."""

from __future__ import annotations

import grpc
import pytest

from services.common.auth import SELF_PRINCIPAL, Authenticator, Refused, parse_tokens
from services.common.config import SecuritySettings

SHOP = "s" * 32
GATEWAY = "g" * 32


def test_tokens_file_lines_name_a_principal_and_its_role_each_and_comments_are_ignored():
    assert parse_tokens(f"# callers\nshop {SHOP} caller\n\ngateway {GATEWAY} service  # the gateway\n") == [
        ("shop", SHOP, "caller"),
        ("gateway", GATEWAY, "service"),
    ]
    assert parse_tokens(f"shop {SHOP} caller, gateway {GATEWAY} admin") == [
        ("shop", SHOP, "caller"), ("gateway", GATEWAY, "admin"),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("shop", "three fields"),
        (f"shop {SHOP}", "role caller, service or admin"),  # a tokens file from before roles
        ("shop short caller", "shorter than 16"),
        (f"shop {SHOP} root", "role 'root' is not one of caller, service, admin"),
    ],
)
def test_bad_token_entries_fail_without_showing_the_token(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_tokens(text)
    assert "short" not in str(error.value).replace("shorter", "")


def test_a_bearer_token_maps_to_its_principal():
    authenticator = Authenticator([("shop", SHOP, "caller"), ("gateway", GATEWAY, "service")])
    assert authenticator.principal([("authorization", f"Bearer {SHOP}")]) == ("shop", "caller")
    assert authenticator.principal([("authorization", f"bearer {GATEWAY}".encode())]) == ("gateway", "service")


@pytest.mark.parametrize(
    "metadata, reason",
    [
        ([], "no credentials"),
        ([("authorization", f"Basic {SHOP}")], "not a bearer token"),
        ([("authorization", "Bearer x" * 20)], "not valid"),
        ([("authorization", f"Bearer {SHOP}"), ("authorization", f"Bearer {SHOP}")], "more than one"),
    ],
)
def test_missing_or_unknown_tokens_are_unauthenticated_and_say_what_to_send(metadata, reason):
    with pytest.raises(Refused) as refused:
        Authenticator([("shop", SHOP, "caller")]).principal(metadata)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert reason in refused.value.message and "authorization: Bearer <token>" in refused.value.message
    assert SHOP not in refused.value.message and "x" * 10 not in refused.value.message


def test_only_digests_of_the_tokens_are_kept():
    authenticator = Authenticator([("shop", SHOP, "caller")])
    assert SHOP not in repr(vars(authenticator))


def test_the_own_token_is_accepted_as_self_with_every_role_so_one_token_runs_everything_locally():
    settings = SecuritySettings(auth="token", own_token=SHOP)
    assert Authenticator.from_settings(settings).principal([("authorization", f"Bearer {SHOP}")]) == (SELF_PRINCIPAL, "admin")


def test_settings_read_tokens_from_files_and_never_print_them(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"shop {SHOP} caller\n")
    own = tmp_path / "token"
    own.write_text(GATEWAY + "\n")
    settings = SecuritySettings.from_env(
        {"SHELFWISE_AUTH": "token", "SHELFWISE_AUTH_TOKENS_FILE": str(tokens), "SHELFWISE_AUTH_TOKEN_FILE": str(own)}
    )
    assert (settings.auth, settings.own_token) == ("token", GATEWAY)
    assert SHOP not in repr(settings) and GATEWAY not in str(settings)


def test_auth_is_off_and_unlimited_by_default():
    settings = SecuritySettings.from_env({})
    assert (settings.auth, settings.rate_limit_rps, settings.tls) == ("off", 0.0, False)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SHELFWISE_AUTH": "maybe"}, "must be one of off, token, mtls"),
        ({"SHELFWISE_AUTH": "token"}, "needs the accepted tokens"),
        ({"SHELFWISE_AUTH": "mtls"}, "needs SHELFWISE_TLS_CERT_FILE"),
        ({"SHELFWISE_TLS_CERT_FILE": "a.crt"}, "go together"),
        ({"SHELFWISE_AUTH_TOKEN": SHOP, "SHELFWISE_AUTH_TOKEN_FILE": "/x"}, "not both"),
        ({"SHELFWISE_AUTH_TOKENS_FILE": "/does/not/exist"}, "cannot be read"),
    ],
)
def test_incomplete_security_settings_fail_at_start_up_naming_the_variable(environ, message):
    with pytest.raises(ValueError, match=message):
        SecuritySettings.from_env(environ)


def test_log_lines_never_carry_bearer_tokens_or_url_passwords():
    import json
    import logging

    from services.common.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord(
        "shelfwise.test", logging.ERROR, __file__, 1, "call with %s to %s failed", (
            ("authorization", f"Bearer {SHOP}"), "postgresql://shelfwise:hunter2hunter2@postgres:5432/shelfwise?password=p4ss"
        ), None,
    )
    for line in (json.loads(JsonFormatter("events").format(record))["message"], TextFormatter("events").format(record)):
        assert SHOP not in line and "hunter2" not in line and "p4ss" not in line
        assert "Bearer ***" in line and "shelfwise:***@postgres" in line


def test_an_own_token_listed_among_the_callers_keeps_its_principal():
    """As deployed: the gateway's tokens file lists `gateway <its own token>`."""
    settings = SecuritySettings(auth="token", caller_tokens=f"gateway {GATEWAY} service\nshop {SHOP} caller", own_token=GATEWAY)
    authenticator = Authenticator.from_settings(settings)
    assert authenticator.principal([("authorization", f"Bearer {GATEWAY}")]) == ("gateway", "service")
    assert authenticator.principals == ["gateway", "shop"]


def test_message_size_limit_is_set_for_all_services_and_overridable_per_service():
    from services.common.config import DEFAULT_MAX_MESSAGE_BYTES, ServerSettings

    # By default what each API needs: small requests at the edge, bulk ones inside.
    assert ServerSettings.from_env("gateway", {}).max_message_bytes == 1024 * 1024
    assert ServerSettings.from_env("query_understanding", {}).max_message_bytes == 64 * 1024
    assert ServerSettings.from_env("retrieval", {}).max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    environ = {"SHELFWISE_MAX_MESSAGE_BYTES": "2000000", "SHELFWISE_RETRIEVAL_MAX_MESSAGE_BYTES": "64000000"}
    assert ServerSettings.from_env("gateway", environ).max_message_bytes == 2_000_000
    assert ServerSettings.from_env("retrieval", environ).max_message_bytes == 64_000_000
