"""Acceptance tests of configuration (SPEC 1.7) through ``qdo config``, as a subprocess."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qdo.config import SETTINGS
from tests.acceptance.test_cli import fails, ok, queues
from tests.conftest import run_qdo


def settings_table(out: str) -> dict[str, tuple[str, str]]:
    """``qdo config`` output as {setting: (value, from)}."""
    rows = {}
    for line in out.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == 3 and parts[0] in SETTINGS:
            rows[parts[0]] = (parts[1], parts[2])
    assert set(rows) == set(SETTINGS), out
    return rows


def assert_sample(path: Path) -> None:
    text = path.read_text()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines()), text
    for name in SETTINGS:
        assert f"# {name} = " in text, name


def test_sample_written_in_qdo_dir(qdo_dir: Path) -> None:
    rc = qdo_dir / "qdorc"
    out = ok("config")
    assert out.splitlines()[0] == f"note: wrote a commented sample configuration to {rc}"
    assert f"configuration file: {rc}" in out
    assert_sample(rc)
    rows = settings_table(out)
    assert rows["qdo_dir"] == (str(qdo_dir), "environment QDO_DIR")
    assert rows["backend"] == ("sqlite", "default")
    assert f"database: {qdo_dir / 'qdo.sqlite'}" in out
    assert f"logs: {qdo_dir / 'logs'}" in out
    # the sample changes nothing, and is written once
    before = rc.read_bytes()
    again = ok("config")
    assert "note:" not in again
    assert settings_table(again) == rows
    assert rc.read_bytes() == before


def test_sample_written_in_home_without_qdo_dir(
    qdo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QDO_DIR")
    home_qdo = tmp_path / "home" / ".qdo"
    out = ok("config")
    assert f"configuration file: {home_qdo / 'qdorc'}" in out
    assert_sample(home_qdo / "qdorc")
    assert settings_table(out)["qdo_dir"] == ("~/.qdo", "default")
    assert f"database: {home_qdo / 'qdo.sqlite'}" in out


def test_qdorc_location_takes_precedence(qdo_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "my.rc"
    env = {"QDORC_LOCATION": str(elsewhere)}
    out = ok("config", env=env)
    assert f"note: wrote a commented sample configuration to {elsewhere}" in out
    assert f"configuration file: {elsewhere}" in out
    assert_sample(elsewhere)
    assert not (qdo_dir / "qdorc").exists()

    # with both files present, only QDORC_LOCATION's is read
    qdo_dir.mkdir(exist_ok=True)
    (qdo_dir / "qdorc").write_text("lease = 30\n")
    elsewhere.write_text("lease = 40\n")
    assert settings_table(ok("config", env=env))["lease"] == ("40", f"file {elsewhere}")
    assert settings_table(ok("config"))["lease"] == ("30", f"file {qdo_dir / 'qdorc'}")


def test_values_from_file_take_effect(qdo_dir: Path, tmp_path: Path) -> None:
    rc = qdo_dir / "qdorc"
    qdo_dir.mkdir()
    logs = tmp_path / "tasklogs"
    rc.write_text(
        "# my settings\n\n"
        "db_name = mine.sqlite\n"
        f"  LOG_DIR = '{logs}'  \n"  # any case, spaces and quotes around the value
        'qdo_batch_profile = "local"\n'  # the environment spelling works too
        "lease=30\n"
    )
    rows = settings_table(ok("config"))
    source = f"file {rc}"
    assert rows["db_name"] == ("mine.sqlite", source)
    assert rows["log_dir"] == (str(logs), source)
    assert rows["batch_profile"] == ("local", source)
    assert rows["lease"] == ("30", source)
    assert rows["backend"] == ("sqlite", "default")
    # and they are used: the database and the logs are where the file says
    ok("create", "C")
    ok("add", "C", "echo hi")
    ok("do", "C")
    assert (qdo_dir / "mine.sqlite").exists()
    assert not (qdo_dir / "qdo.sqlite").exists()
    assert [p.suffix for p in (logs / "C" / "segments").iterdir()] == [".qseg"]
    assert ok("log", "C", "1") == "hi\n"


def test_environment_wins_over_file(qdo_dir: Path, tmp_path: Path) -> None:
    rc = qdo_dir / "qdorc"
    qdo_dir.mkdir()
    rc.write_text("db_name = fromfile.sqlite\nlease = 30\nbatch_profile = pbs\n")
    env = {"QDO_DB_NAME": "fromenv.sqlite", "QDO_LEASE": "45"}
    rows = settings_table(ok("config", env=env))
    assert rows["db_name"] == ("fromenv.sqlite", "environment QDO_DB_NAME")
    assert rows["lease"] == ("45", "environment QDO_LEASE")
    assert rows["batch_profile"] == ("pbs", f"file {rc}")
    ok("create", "E", env=env)
    assert (qdo_dir / "fromenv.sqlite").exists()
    assert not (qdo_dir / "fromfile.sqlite").exists()
    assert queues() == []  # without the variable: the file's database, which has no queue


def test_db_pass_never_printed(qdo_dir: Path) -> None:
    qdo_dir.mkdir()
    (qdo_dir / "qdorc").write_text("db_pass = hunter2\n")
    proc = run_qdo("config")
    assert proc.returncode == 0
    assert "hunter2" not in proc.stdout + proc.stderr
    assert settings_table(proc.stdout)["db_pass"] == ("********", f"file {qdo_dir / 'qdorc'}")
    proc = run_qdo("config", env={"QDO_DB_PASS": "s3cr3t-env"})
    assert "s3cr3t-env" not in proc.stdout + proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr
    assert settings_table(proc.stdout)["db_pass"] == ("********", "environment QDO_DB_PASS")


def test_db_pass_not_leaked_by_malformed_line(qdo_dir: Path) -> None:
    qdo_dir.mkdir()
    (qdo_dir / "qdorc").write_text("db_pass: hunter2\n")
    line = fails("config")
    assert "hunter2" not in line


@pytest.mark.parametrize(
    "text, lineno",
    [
        ("nonsense\n", 1),
        ("# fine\nlease: 30\n", 2),
        ("lease = 30\nbogus = 1\n", 2),
        ("= 5\n", 1),
    ],
)
def test_malformed_qdorc(qdo_dir: Path, text: str, lineno: int) -> None:
    qdo_dir.mkdir()
    rc = qdo_dir / "qdorc"
    rc.write_text(text)
    line = fails("config")
    assert f"{rc}:{lineno}:" in line and "name = value" in line
    assert fails("list") == line  # every command refuses it, before touching the database
    assert not (qdo_dir / "qdo.sqlite").exists()
    assert rc.read_text() == text


def test_a_name_set_twice_in_qdorc_is_refused(qdo_dir: Path) -> None:
    # (the second line won silently: a backend appended below an older one, say)
    qdo_dir.mkdir()
    rc = qdo_dir / "qdorc"
    rc.write_text("lease = 30\n# a comment\nbackend = sqlite\nQDO_LEASE = 60\n")
    line = fails("config")
    assert f"{rc}:4: lease is set again (first on line 1)" in line, line
    assert fails("list") == line and not (qdo_dir / "qdo.sqlite").exists()


def test_unreadable_qdorc(qdo_dir: Path) -> None:
    qdo_dir.mkdir()
    (qdo_dir / "qdorc").write_bytes(b"lease = \xff\xfe\n")
    assert "cannot read configuration file" in fails("config")


def test_a_sample_that_cannot_be_written_says_why(qdo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    proc = run_qdo("config", env={"QDORC_LOCATION": str(tmp_path / "a-file" / "qdorc")})
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in proc.stdout + proc.stderr


def test_a_home_that_cannot_be_found_is_named(qdo_dir: Path) -> None:
    # (~nosuchuser raised RuntimeError from pathlib: a traceback)
    for name in ("QDORC_LOCATION", "QDO_DIR", "QDO_LOG_DIR", "QDO_DB_NAME"):
        line = fails("list", env={name: "~no-such-user-here/x"})
        assert "its ~ cannot be expanded" in line and "'~no-such-user-here/x'" in line, line


def test_bad_backend_and_numbers(qdo_dir: Path) -> None:
    line = fails("config", env={"QDO_BACKEND": "bogus"})
    assert "'bogus'" in line and "QDO_BACKEND" in line and "sqlite, postgres" in line
    assert fails("list", env={"QDO_BACKEND": "bogus"}) == line
    assert fails("create", "X", env={"QDO_BACKEND": "bogus"}) == line
    assert not (qdo_dir / "qdo.sqlite").exists()

    qdo_dir.mkdir(exist_ok=True)
    (qdo_dir / "qdorc").write_text("backend = nosql\n")
    line = fails("config")
    assert "'nosql'" in line and f"file {qdo_dir / 'qdorc'}" in line
    (qdo_dir / "qdorc").unlink()

    for name, value in [("QDO_LEASE", "abc"), ("QDO_LEASE", "-1"), ("QDO_DB_PORT", "x"),
                        ("QDO_DB_PORT", "5432.5"), ("QDO_DB_PORT", "1e3")]:  # fmt: skip
        line = fails("config", env={name: value})
        assert "must be a positive number" in line or "must be a whole number" in line, line
        assert f"(from environment {name})" in line, line  # (where it came from)
    (qdo_dir / "qdorc").write_text("lease = abc\n")
    assert f"(from file {qdo_dir / 'qdorc'})" in fails("config")
    # a byte order mark at the start of the file is no part of its first name
    (qdo_dir / "qdorc").write_bytes("\ufefflease = 30\n".encode())
    assert "30" in settings_table(ok("config"))["lease"][0]
    (qdo_dir / "qdorc").unlink()
    assert not (qdo_dir / "qdo.sqlite").exists()


def test_postgres_settings_hide_the_password(qdo_dir: Path) -> None:
    """`qdo config` shows where the PostgreSQL settings come from, never a password;
    a server that is not there gets one clear line, without the password either."""
    env = {"QDO_BACKEND": "postgres", "QDO_DB_PASS": "pw-secret", "QDO_DB_HOST": "127.0.0.1",
           "QDO_DB_PORT": "1", "QDO_PG_RECONNECT_SECONDS": "0"}  # fmt: skip
    out = ok("config", env=env)
    rows = settings_table(out)
    assert rows["backend"] == ("postgres", "environment QDO_BACKEND")
    assert "pw-secret" not in out and rows["db_pass"][0] == "********"
    line = fails("list", env=env)
    assert "PostgreSQL" in line and "pw-secret" not in line

    url_env = {"QDO_BACKEND": "postgres", "QDO_DB_URL": "postgresql://me:pw-secret@127.0.0.1:1/x",
               "QDO_PG_RECONNECT_SECONDS": "0"}  # fmt: skip
    out = ok("config", env=url_env)
    assert "pw-secret" not in out and "postgresql://me:********@127.0.0.1:1/x" in out
    line = fails("status", env=url_env)
    assert "pw-secret" not in line


def test_postgres_url_in_qdorc(qdo_dir: Path) -> None:
    qdo_dir.mkdir(parents=True, exist_ok=True)
    (qdo_dir / "qdorc").write_text(
        "backend = postgres\ndb_url = postgresql://me:pw-secret@127.0.0.1:1/x\n"
    )
    out = ok("config", env={"QDO_PG_RECONNECT_SECONDS": "0"})
    assert "pw-secret" not in out
    rows = settings_table(out)
    assert rows["db_url"][0] == "postgresql://me:********@127.0.0.1:1/x"
    assert rows["db_url"][1].startswith("file ")


@pytest.mark.parametrize("url", [
    "postgresql://me:pw/se@cret@127.0.0.1:1/x",  # a '/' and an '@' in the password
    "postgresql://me@127.0.0.1:1/x?password=pw-se-cret",
    "postgresql://127.0.0.1:1/x?sslmode=disable&password=pw-se-cret&connect_timeout=1",
])  # fmt: skip
def test_no_password_shape_is_printed(qdo_dir: Path, url: str) -> None:
    """Issue 12 item 2: a password with '/' in it, or in ?password=, was printed by
    `qdo config` and by connection errors."""
    env = {"QDO_BACKEND": "postgres", "QDO_DB_URL": url, "QDO_PG_RECONNECT_SECONDS": "0"}
    out = ok("config", env=env)
    assert "se@cret" not in out and "pw-se-cret" not in out and "********" in out
    line = fails("status", env=env)
    assert "cret" not in line


def test_qdorc_with_a_password_others_can_read_is_warned_of(qdo_dir: Path) -> None:
    qdo_dir.mkdir(parents=True, exist_ok=True)
    rc = qdo_dir / "qdorc"
    rc.write_text("db_pass = hunter2\n")
    rc.chmod(0o644)
    proc = run_qdo("config")
    assert proc.returncode == 0 and "chmod 600" in proc.stdout + proc.stderr
    # one line, as an error is (it came with the warnings module's file and source line)
    (said,) = [x for x in proc.stderr.splitlines() if "chmod 600" in x]
    assert said.startswith("qdo: warning: ") and "api.py" not in proc.stderr, proc.stderr
    rc.chmod(0o600)
    proc = run_qdo("config")
    assert proc.returncode == 0 and "chmod 600" not in proc.stdout + proc.stderr


def test_the_sqlite_database_is_yours_alone(qdo_dir: Path, sqlite_only: None) -> None:
    """Issue 12 item 1: the SQLite file and the folder qdo makes for it were world-
    readable (0644, 0755): every task and payload open to every user of the machine."""
    ok("create", "Mine")
    assert qdo_dir.stat().st_mode & 0o777 == 0o700
    files = [p for p in qdo_dir.iterdir() if p.name.startswith("qdo.sqlite")]
    assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files), files


def test_no_password_goes_on_the_qsub_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdo.launch import _secret_in_env

    monkeypatch.setenv("QDO_DB_URL", "postgresql://h/db?password=x")
    assert _secret_in_env()
    monkeypatch.setenv("QDO_DB_URL", "postgresql://h/db")
    assert not _secret_in_env()


def test_an_unreachable_server_is_said_at_once(qdo_dir: Path) -> None:
    """Issue 12 item 4: an unreachable PostgreSQL gave a minute of silence; now the
    first failed attempt says that qdo keeps trying, for how long, and which knob."""
    env = {"QDO_BACKEND": "postgres", "QDO_DB_URL": "postgresql://me:pw@127.0.0.1:1/x",
           "QDO_PG_RECONNECT_SECONDS": "2"}  # fmt: skip
    proc = run_qdo("status", env=env)
    assert proc.returncode == 1
    first, *_, last = proc.stderr.splitlines()
    assert "cannot reach PostgreSQL" in first and "QDO_PG_RECONNECT_SECONDS" in first
    assert last.startswith("qdo: error: cannot connect") and "pw" not in proc.stderr


def test_reading_makes_nothing_first_real_use_writes_the_sample(
    qdo_dir: Path, sqlite_only: None
) -> None:
    """Issue 13 item 3: reading settings, or a command that finds nothing, wrote a
    sample qdorc and created an empty database (and its folder)."""
    assert queues() == []
    fails("status", "Nope")
    import qdo
    from qdo.errors import UnknownQueue

    with pytest.raises(UnknownQueue):
        qdo.connect("Nope")
    assert not qdo_dir.exists(), sorted(p.name for p in qdo_dir.iterdir())
    ok("create", "First")  # the first real use: the database, and the sample beside it
    assert (qdo_dir / "qdo.sqlite").is_file()
    assert_sample(qdo_dir / "qdorc")
    assert "note:" not in ok("config")  # it exists: nothing more to say or write


def test_the_shell_setting_runs_shell_tasks(qdo_dir: Path) -> None:
    """The shell of shell tasks went around the settings (QDO_SHELL only)."""
    qdo_dir.mkdir(exist_ok=True)
    (qdo_dir / "qdorc").write_text("shell = /bin/sh\n")
    ok("load", "Sh", "-", input="echo shell=$0\n")
    ok("do", "Sh")
    assert "shell=/bin/sh" in ok("log", "Sh", "1")


def test_the_log_is_shown_with_v_only(qdo_dir: Path, sqlite_only: None) -> None:
    """The library logs through `logging` and says nothing unless asked; `qdo -v` shows
    it (here: that qdo made its database)."""
    quiet = run_qdo("create", "A")
    assert quiet.returncode == 0 and quiet.stderr == ""
    (qdo_dir / "qdo.sqlite").unlink()
    loud = run_qdo("-v", "create", "B")
    assert (
        loud.returncode == 0 and f"qdo: making the database {qdo_dir / 'qdo.sqlite'}" in loud.stderr
    )
