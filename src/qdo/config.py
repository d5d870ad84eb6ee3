"""Settings from the environment and a ``qdorc`` file; the environment wins.

The file is ``$QDORC_LOCATION`` if set, else ``$QDO_DIR/qdorc`` if ``QDO_DIR``
is set, else ``~/.qdo/qdorc``.  Reading the settings writes nothing; when the file
does not exist, a commented sample is written there on first real use (when qdo
creates its database, or by ``qdo config``).  Its lines are ``name = value``; lines
starting with ``#`` are comments.  Each setting ``name`` can also be given as the
environment variable ``QDO_NAME`` (``QDO_SHELL``, ``QDO_JOB_END``, ...).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import ConfigError, QdoWarning
from .models import MAX_SECONDS, _short

#: name -> (default, description).  Defaults may refer to {qdo_dir}.
SETTINGS: dict[str, tuple[str, str]] = {
    "qdo_dir": ("~/.qdo", "where qdo keeps its database and logs"),
    "backend": ("sqlite", "sqlite (one file, one machine) or postgres (many nodes)"),
    "db_name": ("qdo.sqlite", "SQLite: database file (relative to qdo_dir); PostgreSQL: database"),
    "db_host": ("", "PostgreSQL server host"),
    "db_port": ("5432", "PostgreSQL server port"),
    "db_user": ("", "PostgreSQL user (default: your login name)"),
    "db_pass": ("", "PostgreSQL password"),
    "db_url": (
        "",
        "PostgreSQL: a connection URL postgresql://user:pass@host:port/db "
        "(instead of the db_* settings above)",
    ),
    "db_schema": ("qdo", "PostgreSQL: the schema that holds qdo's tables"),
    "user": ("", "whose queues you see and change (default: your login name)"),
    "batch_profile": ("", "batch system profile: slurm, pbs or local (default: guessed)"),
    "log_dir": ("{qdo_dir}/logs", "where task output goes"),
    "log_files": (
        "no",
        "yes: a log file per task (LOG_DIR/QUEUE/N/ID.log); no: each agent slot appends "
        "its tasks' output to a few segment files (qdo log reads either)",
    ),
    "lease": (
        "60",
        "seconds a task got with get() stays reserved between renewals (the "
        "client library renews it while its process lives)",
    ),
    "shell": ("", "the shell that runs shell tasks (default: bash, else /bin/sh)"),
    "job_end": (
        "",
        "when the batch job a worker runs in ends, epoch seconds (default: asked of "
        "Slurm); workers then start no task that declares a longer run time",
    ),
    "pg_reconnect_seconds": (
        "60",
        "PostgreSQL: how long qdo keeps trying to reach a server that went away "
        "(a restart) before it gives up",
    ),
    "pg_pooled": (
        "no",
        "PostgreSQL: yes if db_url/db_host is a pooler in transaction mode (PgBouncer): "
        "qdo then keeps nothing in a server session",
    ),
}
BACKENDS = ("sqlite", "postgres")
SECRET = {"db_pass", "db_url"}


def env_name(setting: str) -> str:
    """The environment variable of a setting: QDO_DIR, QDO_BACKEND, QDO_DB_NAME, ..."""
    return setting.upper() if setting.startswith("qdo_") else "QDO_" + setting.upper()


class Settings:
    """Resolved settings; ``sources[name]`` tells where each value came from."""

    def __init__(
        self,
        values: dict[str, str],
        sources: dict[str, str],
        rc_path: Path,
        notes: list[str] | None = None,
    ) -> None:
        self.values = values
        self.sources = sources
        self.rc_path = rc_path
        self.notes = [] if notes is None else notes

    def __repr__(self) -> str:
        return f"Settings({self.values!r}, {self.sources!r}, {self.rc_path!r}, {self.notes!r})"

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    @property
    def qdo_dir(self) -> Path:
        return _expanded(self.values["qdo_dir"], "qdo_dir")

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.qdo_dir / _expanded(self.values["db_name"], "db_name")

    @property
    def log_dir(self) -> Path:
        return _expanded(self.values["log_dir"], "log_dir")

    @property
    def lease(self) -> float:
        return _number("lease", self.values["lease"])

    @property
    def pg_reconnect_seconds(self) -> float:
        return _number("pg_reconnect_seconds", self.values["pg_reconnect_seconds"], zero_ok=True)

    @property
    def log_files(self) -> bool:
        return _yes("log_files", self.values["log_files"])

    @property
    def pg_pooled(self) -> bool:
        return _yes("pg_pooled", self.values["pg_pooled"])

    @property
    def job_end(self) -> float | None:
        return _number("job_end", self.values["job_end"]) if self.values["job_end"] else None

    def shown(self, name: str) -> str:
        value = self.values[name]
        if name == "db_url":
            return mask_url(value)
        return "********" if name in SECRET and value else value

    def postgres_conninfo(self) -> str:
        """The libpq connection string of the PostgreSQL settings (with the password:
        never print it; ``mask_url`` / ``shown`` hide it)."""
        url = self.values["db_url"]
        if url:
            if not url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(
                    f"db_url must start with postgresql:// (from {self.sources['db_url']}), "
                    f"got {mask_url(url)!r}"
                )
            return url
        parts = {
            "host": self.values["db_host"],
            "port": self.values["db_port"],
            # the SQLite file name makes no sense as a PostgreSQL database
            "dbname": "qdo" if self.sources["db_name"] == "default" else self.values["db_name"],
            "user": self.values["db_user"],
            "password": self.values["db_pass"],
        }
        return " ".join(f"{k}={_quote(v)}" for k, v in parts.items() if v)


def rc_path(env: Mapping[str, str]) -> Path:
    if env.get("QDORC_LOCATION"):
        return _expanded(env["QDORC_LOCATION"], "QDORC_LOCATION")
    if env.get("QDO_DIR"):
        return _expanded(env["QDO_DIR"], "QDO_DIR") / "qdorc"
    return _expanded("~/.qdo/qdorc", "the default qdorc")


def _expanded(text: str, what: str) -> Path:
    """``text`` as a path with ``~`` or ``~user`` expanded; a ConfigError that names the
    setting if it cannot be (no such user, no home)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ("Could not determine home directory.")
        raise ConfigError(f"{what} {text!r}: its ~ cannot be expanded (no such user, or no "
                          "home directory): write the path in full") from None  # fmt: skip


def load(env: Mapping[str, str] | None = None, write_sample: bool = False) -> Settings:
    """Resolve every setting: environment, then the qdorc file, then the default.
    Writes nothing, unless ``write_sample``: then a missing file gets the sample."""
    env = os.environ if env is None else env
    path = rc_path(env)
    if path.is_dir():
        raise ConfigError(f"the qdorc location {path} is a directory: point QDORC_LOCATION "
                          "at a file (it need not exist yet)")  # fmt: skip
    notes: list[str] = []
    from_file: dict[str, str] = {}
    if path.is_file():
        from_file = parse_rc(path)
        if (from_file.get("db_pass") or mask_url(from_file.get("db_url", "")) !=
                from_file.get("db_url", "")) and path.stat().st_mode & 0o077:  # fmt: skip
            warning = (f"{path} holds a database password and others may read it: "
                       f"chmod 600 {path}")  # fmt: skip
            notes.append(warning)
            warnings.warn(warning, QdoWarning, stacklevel=2)
    elif write_sample:
        notes.append(write_sample_rc(path))
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for name, (default, _) in SETTINGS.items():
        if env.get(env_name(name)):
            values[name], sources[name] = env[env_name(name)], f"environment {env_name(name)}"
        elif name in from_file:
            values[name], sources[name] = from_file[name], f"file {path}"
        else:
            values[name], sources[name] = default, "default"
    values["log_dir"] = values["log_dir"].replace("{qdo_dir}", values["qdo_dir"])
    if values["backend"] not in BACKENDS:
        raise ConfigError(
            f"backend {values['backend']!r} (from {sources['backend']}) is not one of "
            f"{', '.join(BACKENDS)}"
        )
    checks: list[tuple[str, Callable[[str, str], object]]] = [
        ("db_port", _port), ("lease", _number), ("pg_reconnect_seconds", _at_least_zero),
        ("pg_pooled", _yes), ("log_files", _yes),
    ]  # fmt: skip
    if values["job_end"]:
        checks.append(("job_end", _number))
    for name, check in checks:
        try:
            check(name, values[name])
        except ConfigError as e:  # (where the value came from: a file, the environment)
            raise ConfigError(f"{e} (from {sources[name]})") from None
    qdo_dir = _expanded(values["qdo_dir"], f"qdo_dir (from {sources['qdo_dir']})")
    _expanded(values["log_dir"], f"log_dir (from {sources['log_dir']})")
    if qdo_dir.exists() and not qdo_dir.is_dir():
        raise ConfigError(f"qdo_dir {qdo_dir} (from {sources['qdo_dir']}) is a file, not a "
                          "directory: point QDO_DIR at a directory")  # fmt: skip
    return Settings(values, sources, path, notes)


def parse_rc(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    seen: dict[str, int] = {}  # name -> the line that set it
    try:
        text = path.read_text("utf-8").removeprefix("\ufeff")  # (a BOM, as Windows writes)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read configuration file {path}: {e}") from e
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if key.startswith("qdo_") and key != "qdo_dir":
            key = key[4:]  # accept the environment spelling too
        if not sep or key not in SETTINGS:
            # the line itself is not echoed: it may hold a password
            found = f"unknown name {key!r}" if sep and key else "no 'name = value'"
            raise ConfigError(
                f"{path}:{lineno}: {found}; expected 'name = value' with name one of "
                f"{', '.join(SETTINGS)}"
            )
        if key in seen:  # (which one wins is a guess either way: say so)
            raise ConfigError(f"{path}:{lineno}: {key} is set again (first on line "
                              f"{seen[key]}): keep one of the two")  # fmt: skip
        seen[key] = lineno
        out[key] = value.strip().strip("'\"")
    return out


def sample_rc() -> str:
    lines = [
        "# qdo configuration.  Lines are 'name = value'; environment variables QDO_<NAME>",
        "# override them (run `qdo config` to see what is in effect and where it came from).",
        "",
    ]
    for name, (default, description) in SETTINGS.items():
        lines += [f"# {description}", f"# {name} = {default}", ""]
    return "\n".join(lines)


def write_sample_rc(path: Path) -> str:
    """Write the commented sample to ``path`` unless a file is there; say what happened."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # yours alone
        try:
            with open(path, "x", encoding="utf-8") as out:
                out.write(sample_rc())
        except FileExistsError:
            return f"{path} exists: no sample written"
    except OSError as e:
        if path.parent.exists() and not path.parent.is_dir():  # (mkdir said "File exists")
            return (f"could not write a sample configuration to {path}: {path.parent} is a "
                    "file, not a folder")  # fmt: skip
        return f"could not write a sample configuration to {path}: {e.strerror}"
    return f"wrote a commented sample configuration to {path}"


def _yes(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0", ""):
        return False
    raise ConfigError(f"{name} {text!r}: say yes or no")


def _number(name: str, value: str, zero_ok: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    most = _MOST.get(name, MAX_SECONDS)
    if not 0 <= number <= most or number == 0 and not zero_ok:
        kind = "a number of at least 0" if zero_ok else "a positive number"
        raise ConfigError(f"setting {name} must be {kind}, at most {most:.0f}, got "
                          f"{_short(value)}")  # fmt: skip
    return number


def _at_least_zero(name: str, value: str) -> float:
    return _number(name, value, zero_ok=True)


def _port(name: str, value: str) -> float:
    if not value.strip().isdigit():  # (5432.5 and 1e3 passed, and failed at the connect)
        raise ConfigError(f"setting {name} must be a whole number from 1 to 65535, got "
                          f"{_short(value)}")  # fmt: skip
    return _number(name, value)


#: The largest number a setting takes: seconds up to a year (MAX_SECONDS), but these
_MOST = {"db_port": 65_535.0, "job_end": 1e11}


def mask_url(url: str) -> str:
    """A connection URL or string with its password replaced by ********: in the user
    part of a URL (up to its last '@', so a password may hold '/', ':' or '@'), and in
    ``password=`` of a query string or of a ``key=value`` connection string."""
    import re

    scheme, sep, rest = url.partition("://")
    if sep:
        query = rest.find("?")
        end = rest.rfind("@", 0, query if query >= 0 else len(rest))
        if end < 0:
            end = rest.rfind("@")  # a password with a '?' in it (masking more is no harm)
        user, colon, _password = rest[:end].partition(":")
        if end >= 0 and colon:
            rest = f"{user}:********{rest[end:]}"
        url = scheme + sep + rest
        return re.sub(r"([?&]password=)[^&#]*", r"\1********", url)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1********", url)


def _quote(value: str) -> str:
    """A value for a libpq key=value connection string."""
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
