"""The apps file's tickets and WeCom tables: what each app needs, and every inconsistency."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer_lib import ConfigError, Platform, TokenKind
from producer.apps import AppConfig, Credential, TokenApi, load_apps

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
WECHAT = "https://api.weixin.qq.com"
ENV = {"S1": SECRET, "S2": "second-secret-000", "S3": "another-secret-000"}
HR = (
    '[[apps]]\napp_id = "hr"\nplatform = "wecom"\ncorp_id = "ww_corp"\n'
    'agent_id = 1000002\nsecret_env = "S1"\n'
)


def load(
    tmp_path: Path, text: str, *, wecom_base_url: str = "https://qyapi.weixin.qq.com"
) -> list[AppConfig]:
    path = tmp_path / "apps.toml"
    path.write_text(text, encoding="utf-8")
    return load_apps(path, wechat_base_url=WECHAT, wecom_base_url=wecom_base_url, environ=ENV)


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message
    return message


def test_official_account_with_both_tickets(tmp_path: Path) -> None:
    """tickets = ["jsapi", "wx_card"] gives the token first, then each ticket depending on it."""
    (app,) = load(
        tmp_path, '[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = ["jsapi", "wx_card"]\n'
    )
    assert app.platform is Platform.WECHAT
    assert app.credentials == (
        Credential(TokenKind.ACCESS_TOKEN, None),
        Credential(TokenKind.JSAPI_TICKET, TokenKind.ACCESS_TOKEN),
        Credential(TokenKind.WX_CARD_TICKET, TokenKind.ACCESS_TOKEN),
    )


def test_app_without_tickets_needs_only_its_token(tmp_path: Path) -> None:
    """An app that names no tickets keeps only its access token, as before."""
    (app,) = load(tmp_path, '[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\n')
    assert app.credentials == (Credential(TokenKind.ACCESS_TOKEN, None),)


def test_wecom_agents_of_one_corp(tmp_path: Path) -> None:
    """Two agents of one corp are two apps, each with its own secret, token and tickets."""
    second = HR.replace('"hr"', '"crm"').replace("1000002", '"1000003"').replace("S1", "S2")
    text = HR + 'tickets = ["corp_jsapi", "agent_config"]\n\n' + second
    hr, crm = load(tmp_path, text)
    assert (hr.platform, hr.token_api, hr.corp_id, hr.agent_id) == (
        Platform.WECOM,
        TokenApi.WECOM,
        "ww_corp",
        "1000002",
    )
    assert hr.wecom_agent == "ww_corp/1000002"
    assert [c.kind for c in hr.credentials] == [
        TokenKind.ACCESS_TOKEN,
        TokenKind.CORP_JSAPI_TICKET,
        TokenKind.AGENT_CONFIG_TICKET,
    ]
    assert crm.agent_id == "1000003"


def test_inline_wecom_secret_follows_the_wecom_upstream(tmp_path: Path) -> None:
    """An inline secret of a WeCom app is fine against a local WeCom sandbox only."""
    text = HR.replace('secret_env = "S1"', 'secret = "inline-secret"')
    (app,) = load(tmp_path, text, wecom_base_url="http://127.0.0.1:9000")
    assert app.secret.get_secret_value() == "inline-secret"
    with pytest.raises(ConfigError, match="inline secret"):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = ["jsapi2"]\n',
            "unknown ticket 'jsapi2'",
        ),
        (
            '[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = ["agent_config"]\n',
            "unknown ticket 'agent_config' for platform wechat",
        ),
        (HR + 'tickets = ["jsapi"]\n', "unknown ticket 'jsapi' for platform wecom"),
        (
            '[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = ["jsapi", "jsapi"]\n',
            "listed twice",
        ),
        ('[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = "jsapi"\n', "tickets"),
        ('[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = [1]\n', "tickets"),
        (f'[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntickets = ["{SECRET}"]\n', "<32 chars>"),
        ('[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\nplatform = "dingtalk"\n', "platform"),
        ('[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ncorp_id = "ww"\n', "platform 'wecom' only"),
        (
            '[[apps]]\napp_id = "wxa"\nsecret_env = "S1"\ntoken_api = "wecom"\n',
            "token_api is 'wecom'",
        ),
        (HR.replace('corp_id = "ww_corp"\n', ""), "needs corp_id and agent_id"),
        (HR.replace("agent_id = 1000002\n", ""), "needs corp_id and agent_id"),
        (HR + 'token_api = "stable"\n', "token_api is 'wecom'"),
        (HR.replace("1000002", '"10x"'), "agent_id"),
        (HR.replace("1000002", "true"), "agent_id"),
        (HR.replace('"ww_corp"', '"ww corp"'), "corp_id"),
        (
            HR + "\n" + HR.replace('"hr"', '"hr2"').replace("S1", "S3"),
            "ww_corp/1000002 is already app 'hr'",
        ),
        (
            HR + "\n" + HR.replace('"hr"', '"hr2"').replace("1000002", "1000009"),
            "shares its secret",
        ),
    ],
)
def test_inconsistent_tables_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    """Each unknown kind or inconsistent table stops start-up with one line naming it."""
    assert message in load_error(tmp_path, text)


def test_same_secret_in_two_corps_is_allowed(tmp_path: Path) -> None:
    """Only agents of one corp must not share a secret; another corp is another space."""
    other = HR.replace('"hr"', '"hr2"').replace('"ww_corp"', '"ww_other"')
    assert len(load(tmp_path, HR + "\n" + other)) == 2
