"""One typed configuration: defaults < TOML file < ``HUDDLE_*`` environment < CLI options."""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from signaling.redis_client import check_url

# Lists given as one string (an environment variable, a CLI option) are comma separated, or
# JSON: without NoDecode the environment source would take JSON only and fail on commas.
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every option of a Huddle node. Env names are ``HUDDLE_`` + the upper-cased field."""

    model_config = SettingsConfigDict(env_prefix="HUDDLE_", extra="forbid")

    env: Literal["development", "production"] = Field(
        "development", description="production turns off dev-only features"
    )
    host: str = Field("127.0.0.1", description="address the HTTP/WebSocket server binds")
    port: int = Field(8080, ge=0, le=65535, description="HTTP/WebSocket port (0: any free)")
    data_dir: Path = Field(Path("huddle-data"), description="folder for Redis data and files")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "HUDDLE_REDIS_URL", "redis_url"),
        description="external Redis (redis://, rediss://, unix://) or Redis Cluster "
        "(redis+cluster://host:port[,host:port...]); unset: start and supervise a local "
        "redis-server",
    )
    redis_server: str | None = Field(
        None, description="redis-server binary for the embedded Redis (default: PATH)"
    )
    redis_fsync: Literal["everysec", "always"] = Field(
        "everysec",
        description="when the embedded Redis syncs its append-only file to disk: once a "
        "second (a power cut may lose the last second of writes) or on every write",
    )
    node_id: str = Field("", description="this node's name in the cluster (default: generated)")
    api_key: str = Field("huddle-dev", min_length=1, description="API key: tokens' `iss`")
    api_secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="API secret signing tokens; in development a random one is kept in data_dir",
    )
    dev_login: bool | None = Field(
        None, description="enable POST /v1/dev/login (default: on unless env=production)"
    )
    token_ttl_s: int = Field(6 * 3600, gt=0, description="lifetime of minted tokens")
    max_frame_bytes: int = Field(64 * 1024, ge=1024, description="largest accepted WS frame")
    rate_per_s: float = Field(50.0, gt=0, description="sustained requests/s per connection")
    rate_burst: int = Field(100, ge=1, description="request burst per connection")
    flood_strikes: int = Field(
        200, ge=1, description="rate-limited frames tolerated before closing with 4008"
    )
    heartbeat_s: float = Field(
        20.0, gt=0, description="WS ping interval; a peer silent for 1.5x this is dropped"
    )
    hello_timeout_s: float = Field(10.0, gt=0, description="time allowed to send hello")
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="an HTTP connection whose request headers are not complete this long "
        "after it opened (or after the previous response) is closed",
    )
    http_body_idle_s: float = Field(
        30.0,
        gt=0,
        description="a request body that sends nothing for this long while it is read "
        "ends with 408 and the connection is closed",
    )
    auth_expiring_notice_s: float = Field(
        60.0, ge=0, description="auth.expiring is sent this long before the token expires"
    )
    presence_ttl_s: float = Field(
        45.0, gt=0, description="a device not refreshed for this long is offline"
    )
    presence_refresh_s: float = Field(15.0, gt=0, description="presence refresh interval")
    presence_sweep_s: float = Field(5.0, gt=0, description="expired-device sweep interval")
    max_presence_subscriptions: int = Field(
        2000, ge=1, description="users one connection may watch"
    )
    max_outbound_queue: int = Field(
        2000, ge=16, description="unsent events per connection before closing with 4010"
    )
    ice_addresses: CommaList = Field(
        default_factory=list,
        description="addresses the SFU gathers ICE host candidates on, comma separated "
        "(default: every interface address, as aioice does; 127.0.0.1 for loopback tests)",
    )
    ice_announced_address: str | None = Field(
        None,
        description="address clients reach the SFU at when behind 1:1 NAT (public IP); "
        "replaces the ice_addresses in the candidates the SFU sends",
    )
    ice_port_min: int = Field(0, ge=0, le=65535, description="lowest UDP port for media (0: any)")
    ice_port_max: int = Field(0, ge=0, le=65535, description="highest UDP port for media")
    stun_urls: CommaList = Field(
        default_factory=list, description="STUN URLs handed to clients, comma separated"
    )
    turn_urls: CommaList = Field(
        default_factory=list, description="TURN URLs handed to clients, comma separated"
    )
    turn_secret: SecretStr | None = Field(
        None, description="TURN REST API shared secret: clients get time-limited credentials"
    )
    turn_ttl_s: int = Field(24 * 3600, gt=0, description="lifetime of TURN credentials")
    sfu_workers: int = Field(
        -1, ge=-1, description="SFU worker processes (-1: one per core; 0: rooms in the node)"
    )
    room_capacity: int = Field(50, ge=1, description="participants per call room")
    call_resume_s: float = Field(
        30.0, ge=0, description="a call participant whose socket drops may resume this long"
    )
    selective_forwarding_above: int = Field(
        12,
        ge=1,
        description="rooms larger than this forward only the loudest audio and "
        "the video of the last speakers to each subscriber",
    )
    audio_streams_max: int = Field(3, ge=1, description="audio streams forwarded in large rooms")
    video_last_n: int = Field(9, ge=1, description="speakers whose video large rooms forward")
    sfu_transport_cc: bool = Field(
        True,
        description="offer subscribers transport-wide congestion control: the SFU estimates "
        "and probes their downlinks itself (off: browsers estimate and send REMB)",
    )
    room_empty_grace_s: float = Field(
        30.0, ge=0, description="an empty room is closed after this long"
    )
    ring_timeout_s: float = Field(
        45.0, gt=0, description="an unanswered call.invite ends as missed after this long"
    )
    ring_sweep_s: float = Field(
        1.0, gt=0, description="how often each node ends calls whose ring timeout passed"
    )
    chat_max_text_chars: int = Field(4000, ge=1, description="longest accepted message text")
    chat_max_members: int = Field(500, ge=2, description="most members of a group conversation")
    chat_recall_window_s: float = Field(
        120.0, ge=0, description="senders may recall a message this long after sending it"
    )
    chat_send_per_s: int = Field(
        20, ge=1, description="messages one user may send per second, across all nodes"
    )
    chat_word_filter: CommaList = Field(
        default_factory=list,
        description="regular expressions (case-insensitive) that refuse a message's text",
    )
    chat_replay_events: int = Field(
        20000, ge=100, description="events kept per conversation for devices to catch up"
    )
    chat_feed_events: int = Field(
        5000, ge=100, description="events kept per user feed for devices to catch up"
    )
    chat_sync_max_events: int = Field(
        5000,
        ge=1,
        description="a device further behind than this in a conversation reloads it by page",
    )
    chat_window_events: int = Field(
        2000,
        ge=1,
        description="events (and messages) of each conversation kept in Redis once the "
        "history store has them; older ones are read from the store",
    )
    chat_window_days: float = Field(
        30,
        ge=0,
        description="messages older than this many days leave Redis once the history store "
        "has them (0: by count only)",
    )
    chat_max_reaction_kinds: int = Field(
        50, ge=1, description="different reactions one message may carry"
    )
    history: Literal["sqlite", "postgres"] | None = Field(
        None,
        description="where chat history lives on disk: sqlite (data_dir/history.db) or "
        "postgres (database_url) (default: postgres when database_url is set, else sqlite)",
    )
    database_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "HUDDLE_DATABASE_URL", "database_url"),
        description="PostgreSQL for chat history shared by several nodes "
        "(postgresql://user:password@host/db)",
    )
    history_retention_days: float = Field(
        0,
        ge=0,
        description="delete each conversation's history older than this many days (0: keep it all)",
    )
    chat_replica_ack_ms: int = Field(
        1000,
        ge=0,
        description="on a Redis Cluster, a chat.send is acknowledged once a replica of its "
        "shard has the message, waited for up to this long (else `unavailable`: the client "
        "retries); 0: once the master has it",
    )
    media_max_upload_bytes: int = Field(
        100 * 1024 * 1024, ge=1, description="largest accepted upload, enforced while receiving"
    )
    media_quota_bytes: int = Field(
        1024 * 1024 * 1024, ge=0, description="bytes of files one user may keep (0: no limit)"
    )
    media_backend: Literal["disk", "s3"] = Field(
        "disk", description="where file contents live: data_dir/media, or S3-compatible storage"
    )
    media_s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL (default: AWS for the region)"
    )
    media_s3_bucket: str = Field("huddle-media", description="S3 bucket for file contents")
    media_s3_access_key: str | None = Field(None, description="S3 access key id")
    media_s3_secret_key: SecretStr | None = Field(None, description="S3 secret access key")
    media_s3_region: str = Field("us-east-1", description="S3 region")
    media_deny_types: CommaList = Field(
        default_factory=lambda: [
            "application/x-msdownload",
            "application/x-executable",
            "application/x-mach-binary",
            "application/x-sharedlib",
            "application/x-dex",
            "application/x-shellscript",
            "application/java-archive",
        ],
        description="sniffed MIME types refused at upload, comma separated",
    )
    media_strip_gps: bool = Field(True, description="remove EXIF GPS location from images")
    media_signed_url_ttl_s: int = Field(3600, gt=0, description="lifetime of signed download URLs")
    media_max_image_pixels: int = Field(
        80_000_000, ge=1, description="images with more pixels are refused (decompression bombs)"
    )
    media_workers: int = Field(
        2, ge=1, description="processes making thumbnails, posters and voice notes"
    )
    media_tus_expiry_s: int = Field(
        3600,
        gt=0,
        description="an unfinished resumable upload with no progress for this long is dropped "
        "(its partial file removed, its quota reservation released)",
    )
    media_tus_max_open: int = Field(
        20, ge=1, description="unfinished resumable uploads one user may have at a time"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="least severe log records written to stderr"
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="log lines as JSON objects, or as text for humans"
    )

    @field_validator(
        "ice_addresses",
        "stun_urls",
        "turn_urls",
        "media_deny_types",
        "chat_word_filter",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from None
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.env == "production" and self.api_secret is None:
            raise ValueError("api_secret (HUDDLE_API_SECRET) is required when env=production")
        if self.ice_announced_address and not self.ice_addresses:
            raise ValueError("ice_announced_address needs ice_addresses (what it stands for)")
        if (
            bool(self.ice_port_min) != bool(self.ice_port_max)
            or self.ice_port_min > self.ice_port_max
        ):
            raise ValueError("set both ice_port_min and ice_port_max, min <= max")
        if self.presence_refresh_s >= self.presence_ttl_s:
            raise ValueError("presence_refresh_s must be shorter than presence_ttl_s")
        if self.history == "postgres" and self.database_url is None:
            raise ValueError("history=postgres needs database_url (DATABASE_URL)")
        if self.history == "sqlite" and self.database_url is not None:
            raise ValueError("database_url (DATABASE_URL) is set but history=sqlite")
        if not self.node_id:
            self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        return self

    @property
    def ice_announced(self) -> dict[str, str]:
        """Local ICE address -> the address announced for it."""
        if not self.ice_announced_address:
            return {}
        return dict.fromkeys(self.ice_addresses, self.ice_announced_address)

    @property
    def history_store(self) -> Literal["sqlite", "postgres"]:
        if self.history is not None:
            return self.history
        return "postgres" if self.database_url is not None else "sqlite"

    @property
    def dev_login_enabled(self) -> bool:
        if self.dev_login is None:
            return self.env != "production"
        return self.dev_login

    def secret(self) -> str:
        """The API secret; in development one is generated once and kept in data_dir."""
        if self.api_secret is not None:
            return self.api_secret.get_secret_value()
        path = self.data_dir / "api_secret"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, path)
        self.api_secret = SecretStr(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("HUDDLE_CONFIG")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(toml)),)
        return sources


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the TOML file (if any), the environment and explicit overrides."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if config_file is None:
        return Settings(**given)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    previous = os.environ.get("HUDDLE_CONFIG")
    os.environ["HUDDLE_CONFIG"] = str(config_file)
    try:
        return Settings(**given)
    finally:
        if previous is None:
            del os.environ["HUDDLE_CONFIG"]
        else:
            os.environ["HUDDLE_CONFIG"] = previous
