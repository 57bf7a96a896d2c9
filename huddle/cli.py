"""The ``huddle`` command: ``huddle serve`` runs a node, ``huddle token`` mints a token,
``huddle history backup|restore`` copies the embedded chat history store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from huddle import __version__
from huddle.config import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huddle", description="Huddle real-time media and signaling server"
    )
    parser.add_argument("--version", action="version", version=f"huddle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run a node",
        description="Run a node. Every option can also be set as HUDDLE_<OPTION> in the "
        "environment or in the TOML file given by --config; options given here win.",
        epilog="Secrets are not options (argv is visible to every user of the machine): set "
        + ", ".join(f"HUDDLE_{name.upper()}" for name in secret_fields())
        + " in the environment or the TOML file.",
    )
    serve.add_argument("--config", type=Path, help="TOML file with settings")
    add_settings_options(serve)

    token = sub.add_parser("token", help="print an access token for IDENTITY")
    token.add_argument("identity")
    token.add_argument("--config", type=Path, help="TOML file with settings")
    token.add_argument(
        "--data-dir",
        dest="data_dir",
        default=None,
        help="data folder holding the development API secret",
    )
    token.add_argument("--name", help="display name (default: the identity)")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    token.add_argument(
        "--room",
        dest="rooms",
        action="append",
        help="room the token may join; repeat for several (default: any)",
    )
    token.add_argument("--no-publish", dest="can_publish", action="store_false")
    token.add_argument("--no-subscribe", dest="can_subscribe", action="store_false")
    token.add_argument("--admin", action="store_true")
    history = sub.add_parser(
        "history",
        help="back up or restore the embedded chat history store",
        description="Back up or restore data_dir/history.db, the embedded chat history "
        "store (history=sqlite). A backup may be taken while the node runs; stop the node "
        "before a restore. A PostgreSQL store is backed up with PostgreSQL's own tools.",
    )
    history.add_argument("action", choices=["backup", "restore"])
    history.add_argument("path", type=Path, help="the backup file (backup: a new file)")
    history.add_argument("--config", type=Path, help="TOML file with settings")
    history.add_argument(
        "--data-dir", dest="data_dir", default=None, help="data folder holding history.db"
    )
    return parser


def secret_fields() -> list[str]:
    """Settings that are never command-line options: argv shows in ``ps``."""
    return [
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *get_args(field.annotation))
    ]


def option_help(field: FieldInfo) -> str:
    """An option's help: the field's description, then its default unless it names one."""
    # argparse %-formats help strings: a literal % would break --help
    text = (field.description or "").replace("%", "%%")
    if "(default:" in text:
        return text
    default = field.get_default(call_default_factory=True)
    if default is None:
        return text  # unset: the description says what that means
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, list):
        shown = ", ".join(str(v) for v in default) or "none"
    elif default == "":
        shown = "none"
    else:
        shown = str(default).replace("%", "%%")
    return f"{text} (default: {shown})"


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """One option per Settings field except secrets, defaulting to None (not given)."""
    hidden = set(secret_fields())
    for name, field in Settings.model_fields.items():
        if name in hidden:
            continue
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        if annotation is bool or annotation == (bool | None):
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=option_help(field),
            )
            continue
        metavar = None
        if get_origin(annotation) is Literal:
            metavar = "{" + ",".join(str(v) for v in get_args(annotation)) + "}"
        parser.add_argument(flag, dest=name, default=None, metavar=metavar, help=option_help(field))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    values = vars(args)
    command = values.pop("command")
    config = values.pop("config", None)
    try:
        if command == "serve":
            settings = load_settings(config, **values)
        else:
            settings = load_settings(config, data_dir=values["data_dir"])
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"huddle: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if command == "serve":
        return _serve(settings)
    if command == "history":
        return _history(settings, args.action, args.path)
    return _token(settings, args)


def _serve(settings: Settings) -> int:
    from chat.history.store import HistoryError
    from huddle import logs
    from huddle.app import serve
    from huddle.redis_server import RedisNotFound

    logs.configure(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except (RedisNotFound, HistoryError) as exc:
        print(f"huddle: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _history(settings: Settings, action: str, path: Path) -> int:
    from chat.history import backup
    from chat.history.config import SQLITE_NAME
    from chat.history.store import HistoryError

    if settings.history_store != "sqlite":
        print(
            "huddle: chat history is in PostgreSQL (database_url): back it up with pg_dump",
            file=sys.stderr,
        )
        return 2
    store = settings.data_dir / SQLITE_NAME
    try:
        if action == "backup":
            backup.backup(store, path)
        else:
            backup.restore(path, store)
    except HistoryError as exc:
        print(f"huddle: {exc}", file=sys.stderr)
        return 2
    if action == "backup":
        print(f"huddle: backed up {store} to {path}")
    else:
        print(f"huddle: restored {store} from {path}")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from signaling.auth import Grants, mint_token

    grants = Grants(
        rooms=args.rooms or ["*"],
        can_publish=args.can_publish,
        can_subscribe=args.can_subscribe,
        admin=args.admin,
    )
    try:
        token = mint_token(
            api_key=settings.api_key,
            api_secret=settings.secret(),
            identity=args.identity,
            name=args.name,
            ttl_s=args.ttl or settings.token_ttl_s,
            grants=grants,
        )
    except ValueError as exc:
        print(f"huddle: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
