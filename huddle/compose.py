"""Each feature's own configuration, built from the node's settings. Features never see
``Settings``: they take these small frozen configs, so none imports the composition root."""

from __future__ import annotations

import dataclasses
from typing import Any

from calls.config import CallsConfig
from chat.config import ChatConfig
from chat.history.config import SQLITE_NAME, HistoryConfig
from huddle import sfu_worker
from huddle.config import Settings
from media_store.config import MediaConfig


def _same_named(settings: Settings, config: type[Any]) -> dict[str, Any]:
    """The settings whose names are fields of ``config``."""
    names = {f.name for f in dataclasses.fields(config)}
    return {name: getattr(settings, name) for name in names if name in Settings.model_fields}


def media_config(settings: Settings) -> MediaConfig:
    values = _same_named(settings, MediaConfig)
    secret = settings.media_s3_secret_key
    values["media_s3_secret_key"] = secret.get_secret_value() if secret is not None else None
    values["media_deny_types"] = list(settings.media_deny_types)
    return MediaConfig(
        root=settings.data_dir / "media",
        token_keys={settings.api_key: settings.secret()},
        **values,
    )


def chat_config(settings: Settings) -> ChatConfig:
    values = _same_named(settings, ChatConfig)
    values["chat_word_filter"] = list(settings.chat_word_filter)
    return ChatConfig(**values)


def calls_config(settings: Settings) -> CallsConfig:
    values = _same_named(settings, CallsConfig)
    secret = settings.turn_secret
    values["turn_secret"] = secret.get_secret_value() if secret is not None else None
    values["ice_addresses"] = list(settings.ice_addresses)
    values["stun_urls"] = list(settings.stun_urls)
    values["turn_urls"] = list(settings.turn_urls)
    return CallsConfig(
        ice_announced=settings.ice_announced,
        sfu_worker_module=sfu_worker.__name__,
        **values,
    )


def history_config(settings: Settings) -> HistoryConfig:
    url = settings.database_url
    return HistoryConfig(
        store=settings.history_store,
        path=settings.data_dir / SQLITE_NAME,
        database_url=url.get_secret_value() if url is not None else None,
        history_retention_days=settings.history_retention_days,
    )
