"""Settings, the database's health and who may use what: config, serve, fsck, share,
admin init-db."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import config, display
from ..api import connect
from ..errors import ConfigError, InvalidInput
from .common import Commands, port


def register(commands: Commands) -> None:
    commands.command("config", cmd_config)
    p = commands.command("serve", cmd_serve)
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1, this machine)")  # fmt: skip
    p.add_argument("--port", type=port, default=8770, help="default 8770")
    p.add_argument("--token-file", metavar="FILE",
                   help="read the token from FILE; if it is missing, write a new one there "
                        "(mode 0600)")  # fmt: skip
    p = commands.command("fsck", cmd_fsck)
    p.add_argument("--repair", action="store_true",
                   help="count every queue's tasks again and keep that (the database's "
                        "owner; tasks wait meanwhile)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the problems as a JSON list")
    p = commands.queue_command("share", cmd_share)
    p.add_argument("--with", dest="role", metavar="ROLE", help="the role to share with")
    how = p.add_mutually_exclusive_group()
    for flag, help in (("read", "it may read the queue (the default with --with)"),
                       ("write", "it may also add, run, retry and rerun its tasks"),
                       ("revoke", "it may no longer reach the queue")):  # fmt: skip
        how.add_argument(f"--{flag}", dest="mode", action="store_const", const=flag, help=help)
    p.set_defaults(mode="list")
    verbs = commands.parser("admin").add_subparsers(
        dest="admin_command", metavar="COMMAND", required=True
    )
    p = verbs.add_parser(
        "init-db",
        help="set up a shared database: every user connects as "
        "their own role, and its row-level security keeps them apart",
    )
    p.set_defaults(func=cmd_admin_init_db)
    p.add_argument("-v", "--verbose", action="store_true", help="on errors, the whole cause chain")
    p.add_argument("--group", default="qdo_users", metavar="ROLE",
                   help="the role whose members may use the database (created if missing; "
                        "default qdo_users)")  # fmt: skip
    p.add_argument("--users", type=_roles, default=[], metavar="ROLE,...",
                   help="existing roles to make members of --group")  # fmt: skip


def _roles(text: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    if not roles:
        raise argparse.ArgumentTypeError("give role names separated by commas")
    return roles


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..web.app import new_token, serve
    except ImportError as e:
        raise InvalidInput(f"qdo serve needs the web extra ({e.name} is missing): "
                           "pip install 'qdo-queue[web]'") from None  # fmt: skip
    token = new_token()
    if args.token_file:
        path = Path(args.token_file)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                token = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                why = e.strerror if isinstance(e, OSError) else "it is not text"
                raise InvalidInput(f"cannot read the token from {path}: {why}") from None
            if len(token) < 16:
                raise InvalidInput(f"{path} holds no token of 16 characters or more") from None
        except OSError as e:
            raise InvalidInput(f"cannot write the token to {path}: {e.strerror}") from None
        else:
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
    serve(args.host, args.port, token, say=lambda line: print(line, flush=True))
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from ..store.factory import open_store

    settings = config.load()
    store = open_store(settings)
    try:
        problems = store.check()
        if problems and args.repair:
            store.repair_counts()
            left = store.check()
            for p in problems:
                print(f"{'left' if p in left else 'repaired'}: {p}", file=sys.stderr)
            problems = left
        problems += _damaged_logs(settings.log_dir)
        if args.json:
            print(json.dumps(problems))
        elif not args.repair:
            for p in problems:
                print(p)
        if not args.json:
            print(f"{store.location}: {len(problems) or 'no'} problem"
                  f"{'' if len(problems) == 1 else 's'}", file=sys.stderr)  # fmt: skip
        return 1 if problems else 0
    finally:
        store.close()


def _damaged_logs(log_dir: Path) -> list[str]:
    """The records of the log segments that are not whole (one whose agent still runs
    here may be being written: a note, not a problem)."""
    from .. import logs

    out = []
    for segment in logs.segments(log_dir):
        for damage in logs.scan(segment):
            if damage.writing:
                print(f"note: {damage}", file=sys.stderr)
            else:
                out.append(f"log segment {damage}")
    return out


def cmd_config(args: argparse.Namespace) -> int:
    settings = config.load(write_sample=True)
    for note in settings.notes:
        print(f"note: {note}")
    print(f"configuration file: {settings.rc_path}")
    rows = [[name, settings.shown(name), settings.sources[name]] for name in config.SETTINGS]
    for line in display.table(["SETTING", "VALUE", "FROM"], rows):
        print(line)
    if settings["backend"] == "sqlite":
        print(f"database: {settings.db_path}")
    print(f"logs: {settings.log_dir}")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    q = connect(args.queue)
    if args.role is None:
        if args.mode != "list":
            raise InvalidInput("say whom to share with: --with ROLE")
        shares = q.shares()
        for role, how in shares:
            print(f"{role}\t{how}")
        if not shares:
            print(f"{args.queue} is shared with nobody", file=sys.stderr)
        return 0
    if args.mode == "list":
        raise InvalidInput("say how: --read, --write or --revoke")
    mode: str | None = None if args.mode == "revoke" else args.mode
    q.share(args.role, mode)
    said = {"read": "may read", "write": "may read and change (add, run, reset)",
            None: "may no longer reach"}[mode]  # fmt: skip
    print(f"{args.role} {said} {args.queue}")
    return 0


def cmd_admin_init_db(args: argparse.Namespace) -> int:
    from ..store.factory import open_store
    from ..store.postgres import PostgresStore

    settings = config.load()
    if settings["backend"] != "postgres":
        raise ConfigError(
            "init-db sets up a shared PostgreSQL database (QDO_BACKEND=postgres); a SQLite "
            "file needs no set-up and is yours alone"
        )
    store = open_store(settings)
    assert isinstance(store, PostgresStore)
    if store.row_security:
        raise ConfigError(
            f"connect as the role that owns {store.location} to set it up (this connection "
            "is subject to its row-level security)"
        )
    created = store.open_to(args.group, args.users)
    print(f"{store.location}: shared database ready; members of role {args.group}"
          f"{' (created)' if created else ''} may use it, each seeing only their own queues "
          "and those shared with them (qdo share)")  # fmt: skip
    for member in args.users:
        print(f"  {member}: member of {args.group}")
    print("each user connects as their own role (db_user/db_pass, or db_url, in their qdorc)")
    return 0
