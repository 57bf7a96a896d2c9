from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from huddle.cli import main, secret_fields
from huddle.config import Settings, load_settings
from signaling.auth import verify_token

SECRET = "s" * 40


def test_defaults_are_the_embedded_dev_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    s = Settings()
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.redis_url is None
    assert s.dev_login_enabled
    assert s.node_id


def test_production_requires_secret_and_disables_dev_login() -> None:
    with pytest.raises(ValidationError, match="api_secret"):
        Settings(env="production")
    s = Settings(env="production", api_secret=SECRET)
    assert not s.dev_login_enabled
    assert Settings(env="production", api_secret=SECRET, dev_login=True).dev_login_enabled


def test_short_secret_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(api_secret="short")


def test_precedence_cli_over_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "huddle.toml"
    toml.write_text('port = 9001\nhost = "127.0.0.2"\napi_key = "from-toml"\n')
    monkeypatch.setenv("HUDDLE_PORT", "9002")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/0")
    s = load_settings(toml)
    assert s.port == 9002  # env beats file
    assert s.host == "127.0.0.2"  # file beats default
    assert s.api_key == "from-toml"
    assert s.redis_url == "redis://127.0.0.1:6390/0"
    assert load_settings(toml, port=9003).port == 9003  # CLI beats env


def test_lists_from_the_environment_are_comma_separated_or_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = ["turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"]
    monkeypatch.setenv("HUDDLE_TURN_URLS", " , ".join(urls))
    monkeypatch.setenv("HUDDLE_ICE_ADDRESSES", '["10.0.0.5", "10.0.0.6"]')
    s = Settings()
    assert s.turn_urls == urls
    assert s.ice_addresses == ["10.0.0.5", "10.0.0.6"]
    assert load_settings(None, stun_urls="stun:a:3478,stun:b:3478").stun_urls == [
        "stun:a:3478",
        "stun:b:3478",
    ]
    monkeypatch.setenv("HUDDLE_STUN_URLS", '["stun:a:3478"')
    with pytest.raises(ValidationError, match="not a JSON list"):
        Settings()


def test_bad_values_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUDDLE_PORT", "eighty")
    with pytest.raises(ValidationError):
        Settings()


def test_dev_secret_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).secret()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path).secret() == first
    assert (tmp_path / "api_secret").stat().st_mode & 0o077 == 0


def test_cli_token_mints_verifiable_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUDDLE_API_SECRET", SECRET)
    code = main(
        ["token", "alice", "--name", "Alice", "--room", "standup", "--no-publish", "--ttl", "120"]
    )
    assert code == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(token, keys={"huddle-dev": SECRET})
    assert claims.identity == "alice"
    assert claims.name == "Alice"
    assert claims.grants.rooms == ["standup"]
    assert not claims.grants.can_publish
    assert claims.grants.can_subscribe
    assert claims.expires_at - claims.issued_at == 120


def test_cli_rejects_bad_identity_and_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HUDDLE_API_SECRET", SECRET)
    assert main(["token", "not valid!"]) == 2
    assert "identity" in capsys.readouterr().err
    assert main(["serve", "--port", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "invalid configuration" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2


def test_serve_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for name in Settings.model_fields:
        if name not in secret_fields():
            assert "--" + name.replace("_", "-") in out
