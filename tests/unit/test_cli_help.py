"""``huddle serve --help`` is generated from Settings: every field, described, one default."""

from __future__ import annotations

import argparse
import re

import pytest
from pydantic.fields import FieldInfo

from huddle.cli import add_settings_options, main, option_help, secret_fields
from huddle.config import Settings


class _OneLineFormatter(argparse.HelpFormatter):
    """Each option and its whole help on one line, so the help can be read per option."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=1_000_000, max_help_position=1_000_000)


def _help_by_flag() -> dict[str, str]:
    parser = argparse.ArgumentParser(prog="serve", formatter_class=_OneLineFormatter)
    add_settings_options(parser)
    helps: dict[str, str] = {}
    for line in parser.format_help().splitlines():
        line = line.strip()
        if not line.startswith("--"):
            continue
        invocation, *text = re.split(r"\s{2,}", line, maxsplit=1)
        helps[invocation.split(",")[0].split()[0]] = "".join(text)
    return helps


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_field_is_described() -> None:
    undescribed = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert undescribed == []


def test_every_field_but_secrets_is_an_option_with_its_description() -> None:
    helps = _help_by_flag()
    secrets = set(secret_fields())
    assert "api_secret" in secrets
    for name, field in Settings.model_fields.items():
        if name in secrets:
            assert _flag(name) not in helps, f"secret {name} must stay out of argv"
            continue
        text = helps.get(_flag(name))
        assert text, f"{_flag(name)} is missing or has no help"
        assert not text.startswith(name), f"{_flag(name)} is described by its field name"
        assert (field.description or "").split("(default:")[0].strip() in text.replace("%%", "%")


def test_no_undefined_or_doubled_defaults() -> None:
    for flag, text in _help_by_flag().items():
        assert "PydanticUndefined" not in text, flag
        assert "(default: None)" not in text, flag
        assert text.count("(default:") <= 1, f"{flag}: {text}"


def test_serve_help_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps anywhere
    assert "PydanticUndefined" not in out
    for name in Settings.model_fields:
        if name in secret_fields():
            assert f"HUDDLE_{name.upper()}" in out  # the epilog names where secrets go
        else:
            assert _flag(name) in out


def test_option_help_rules() -> None:
    assert (
        option_help(FieldInfo(default_factory=list, description="urls")) == "urls (default: none)"
    )
    assert option_help(FieldInfo(default_factory=lambda: ["a", "b"], description="x")) == (
        "x (default: a, b)"
    )
    assert option_help(FieldInfo(default=None, description="unset: off")) == "unset: off"
    assert option_help(FieldInfo(default="", description="name (default: generated)")) == (
        "name (default: generated)"
    )
    assert option_help(FieldInfo(default=True, description="flag")) == "flag (default: on)"
    text = option_help(FieldInfo(default=5, description="50% of it"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", help=text)
    assert "50% of it (default: 5)" in parser.format_help()  # argparse's %-formatting survives
