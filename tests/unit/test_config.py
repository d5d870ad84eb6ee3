"""Settings: lookup order of the qdorc file, sample writing, environment over file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdo import config
from qdo.errors import ConfigError


def test_lookup_order(tmp_path: Path) -> None:
    home = Path("~/.qdo/qdorc").expanduser()
    assert config.rc_path({}) == home
    assert config.rc_path({"QDO_DIR": str(tmp_path)}) == tmp_path / "qdorc"
    rc = tmp_path / "elsewhere" / "rc"
    assert config.rc_path({"QDO_DIR": str(tmp_path), "QDORC_LOCATION": str(rc)}) == rc


def test_reading_settings_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "qdo"
    settings = config.load({"QDO_DIR": str(home)})
    assert settings.notes == [] and not home.exists()


def test_sample_written_once_and_parses(tmp_path: Path) -> None:
    env = {"QDO_DIR": str(tmp_path)}
    settings = config.load(env, write_sample=True)
    rc = tmp_path / "qdorc"
    assert rc.is_file() and settings.rc_path == rc
    assert any("sample" in n for n in settings.notes)
    assert config.parse_rc(rc) == {}  # every line of the sample is a comment
    for name in config.SETTINGS:
        assert f"# {name} = " in rc.read_text()
    assert config.load(env, write_sample=True).notes == []


def test_environment_wins_over_file(tmp_path: Path) -> None:
    rc = tmp_path / "qdorc"
    rc.write_text("# comment\nbackend = sqlite\ndb_name = fromfile.db\nQDO_LEASE = 30\n"
                  "db_pass = s3cr#t\n")  # fmt: skip
    rc.chmod(0o600)  # a password others may read is warned of
    env = {"QDO_DIR": str(tmp_path), "QDO_DB_NAME": "fromenv.db"}
    s = config.load(env)
    assert s["db_name"] == "fromenv.db" and s.sources["db_name"] == "environment QDO_DB_NAME"
    assert s.lease == 30 and s.sources["lease"] == f"file {rc}"
    assert s["db_pass"] == "s3cr#t" and s.shown("db_pass") == "********"
    assert s.sources["batch_profile"] == "default"
    assert s.db_path == tmp_path / "fromenv.db"
    assert s.log_dir == tmp_path / "logs"


def test_absolute_db_name(tmp_path: Path) -> None:
    s = config.load({"QDO_DIR": str(tmp_path), "QDO_DB_NAME": "/abs/q.db"})
    assert s.db_path == Path("/abs/q.db")


@pytest.mark.parametrize(
    "line",
    ["nonsense", "colour = blue", "= x"],
)
def test_bad_rc_lines(tmp_path: Path, line: str) -> None:
    (tmp_path / "qdorc").write_text(f"backend = sqlite\n{line}\n")
    with pytest.raises(ConfigError, match=r"qdorc:2"):
        config.load({"QDO_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    "env",
    [
        {"QDO_BACKEND": "mysql"},
        {"QDO_LEASE": "-1"},
        {"QDO_DB_PORT": "abc"},
        {"QDO_PG_RECONNECT_SECONDS": "-1"},
        {"QDO_JOB_END": "soon"},
        {"QDO_PG_POOLED": "maybe"},
    ],
)
def test_bad_values(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config.load({"QDO_DIR": str(tmp_path), **env})


def test_unwritable_sample_is_a_note_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = config.load({"QDORC_LOCATION": str(blocker / "qdorc")}, write_sample=True)
    assert any("could not write" in n for n in s.notes)


def test_settings_that_were_environment_only(tmp_path: Path) -> None:
    (tmp_path / "qdorc").write_text("shell = /bin/sh\npg_reconnect_seconds = 0\n")
    s = config.load({"QDO_DIR": str(tmp_path), "QDO_JOB_END": "1900000000"})
    assert s["shell"] == "/bin/sh" and s.sources["shell"] == f"file {tmp_path / 'qdorc'}"
    assert s.pg_reconnect_seconds == 0
    assert s.job_end == 1900000000 and s.sources["job_end"] == "environment QDO_JOB_END"
    assert config.load({"QDO_DIR": str(tmp_path / "none")}).job_end is None


def test_pg_pooled_says_yes_or_no(tmp_path: Path) -> None:
    assert config.load({"QDO_DIR": str(tmp_path)}).pg_pooled is False
    for word, meant in (("yes", True), ("ON", True), ("0", False), ("no", False)):
        assert config.load({"QDO_DIR": str(tmp_path), "QDO_PG_POOLED": word}).pg_pooled is meant
