"""Starting up through the real CLI: config lookup and refusals, ``hearth init``, a database
that cannot be reached, and the SQLite settings every connection gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from cli.main import cli
from service.core.config import load_settings
from service.core.crypto import new_key
from service.db import migrate
from service.db.context import Hearth
from service.db.models import Partner


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """./hearth.toml and relative SQLite paths resolve in a directory of the test's own."""
    monkeypatch.chdir(tmp_path)


def hearth(*args: str, **env: str) -> Result:
    """``hearth ARGS`` as from a shell: settings come from files and the environment."""
    return CliRunner().invoke(cli, list(args), env=env)


def one_line(result: Result, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    (line,) = result.output.strip().splitlines()
    return line


def write(name: str, text: str) -> str:
    Path(name).write_text(text, encoding="utf-8")
    return name


def _uses(url: str) -> str:
    """What ``couple list`` says about an empty database: it names the URL it was given."""
    return f"error: database {url} has no Hearth schema yet: run `hearth db upgrade`"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (
            "[daemon]\nbogus = 1\n",
            {},
            "error: config: daemon.bogus: unknown key (from c.toml)",
        ),
        (
            '[daemon]\nconcurrency = "many"\n',
            {},
            "error: config: daemon.concurrency: Input should be a valid integer, unable to parse "
            "string as an integer (from c.toml)",
        ),
        (
            "[daemon]\nconcurrency = 0\n",
            {},
            "error: config: daemon.concurrency: Input should be greater than or equal to 1 "
            "(from c.toml)",
        ),
        (
            '[defaults]\ntimezone = "Mars/Olympus"\n',
            {},
            "error: config: defaults.timezone: must be an IANA timezone such as Europe/Berlin "
            "(from c.toml)",
        ),
        ("[nonsense]\nx = 1\n", {}, "error: config: nonsense: unknown section (from c.toml)"),
        ("daemon = 3\n", {}, "error: config: daemon: must be a table [daemon] (from c.toml)"),
        ("[daemon\n", {}, "error: config: c.toml: not valid TOML: "),
        (
            "",
            {"HEARTH_TWILIO_AUTHTOKEN": "x"},
            "error: config: HEARTH_TWILIO_AUTHTOKEN: unknown key twilio.authtoken",
        ),
        (
            "",
            {"HEARTH_NOPE_X": "1"},
            "error: config: HEARTH_NOPE_X: unknown setting; sections are database, daemon, ",
        ),
        # The file is fine; the variable that overrides it is what is wrong, and is named.
        (
            "[daemon]\nconcurrency = 5\n",
            {"HEARTH_DAEMON_CONCURRENCY": "abc"},
            "error: config: daemon.concurrency: Input should be a valid integer, unable to parse "
            "string as an integer (from HEARTH_DAEMON_CONCURRENCY)",
        ),
        (
            "",
            {"HEARTH_WEB_PUBLIC_BASE_URL": "ftp://x"},
            "error: config: web.public_base_url: must start with http:// or https:// "
            "(from HEARTH_WEB_PUBLIC_BASE_URL)",
        ),
    ],
)
def test_config_refusals_are_one_line_and_exit_2(
    toml: str, env: dict[str, str], message: str
) -> None:
    write("c.toml", toml)
    line = one_line(hearth("--config", "c.toml", "couple", "list", **env), 2)
    assert line.startswith(message), line
    assert not list(Path().glob("*.db"))  # refused before any database was touched


def test_a_missing_config_file_is_refused() -> None:
    assert one_line(hearth("--config", "nope.toml", "couple", "list"), 2) == (
        "error: config: nope.toml: file not found"
    )
    assert one_line(hearth("couple", "list", HEARTH_CONFIG="gone.toml"), 2) == (
        "error: config: gone.toml: file not found"
    )


def test_secrets_can_come_from_files() -> None:
    """HEARTH_<SECTION>_<KEY>_FILE, as Docker secrets and systemd credentials hand them over:
    the file's text without its trailing newline, with the same refusals as the variable."""
    write("token", "t0ken-from-a-file\n")
    write("url", "sqlite:///from-file.db\n")
    write("many", "many\n")
    settings = load_settings(None, environ={"HEARTH_TWILIO_AUTH_TOKEN_FILE": "token"})
    assert settings.twilio.auth_token.get_secret_value() == "t0ken-from-a-file"
    assert one_line(hearth("couple", "list", HEARTH_DATABASE_URL_FILE="url"), 1) == _uses(
        "sqlite:///from-file.db"
    )
    both = hearth("couple", "list", HEARTH_DATABASE_URL_FILE="url", HEARTH_DATABASE_URL="x")
    assert one_line(both, 2) == (
        "error: config: HEARTH_DATABASE_URL_FILE: set either HEARTH_DATABASE_URL or "
        "HEARTH_DATABASE_URL_FILE, not both"
    )
    assert one_line(hearth("couple", "list", HEARTH_SMTP_PASSWORD_FILE="gone"), 2) == (
        "error: config: HEARTH_SMTP_PASSWORD_FILE: cannot read gone: No such file or directory"
    )
    write("blank", "  \n")
    assert one_line(hearth("couple", "list", HEARTH_SMTP_PASSWORD_FILE="blank"), 2) == (
        "error: config: HEARTH_SMTP_PASSWORD_FILE: blank is empty"
    )
    assert one_line(hearth("couple", "list", HEARTH_DAEMON_CONCURRENCY_FILE="many"), 2) == (
        "error: config: daemon.concurrency: Input should be a valid integer, unable to parse "
        "string as an integer (from HEARTH_DAEMON_CONCURRENCY_FILE)"
    )
    assert one_line(hearth("couple", "list", HEARTH_TWILIO_AUTHTOKEN_FILE="token"), 2) == (
        "error: config: HEARTH_TWILIO_AUTHTOKEN_FILE: unknown key twilio.authtoken_file"
    )


def test_config_file_lookup_order() -> None:
    # Nothing anywhere: built-in defaults, SQLite in ./hearth.db.
    assert one_line(hearth("couple", "list"), 1) == _uses("sqlite:///hearth.db")
    write("hearth.toml", '[database]\nurl = "sqlite:///local.db"\n')
    assert one_line(hearth("couple", "list"), 1) == _uses("sqlite:///local.db")
    write("env.toml", '[database]\nurl = "sqlite:///env.db"\n')
    assert one_line(hearth("couple", "list", HEARTH_CONFIG="env.toml"), 1) == _uses(
        "sqlite:///env.db"
    )
    write("flag.toml", '[database]\nurl = "sqlite:///flag.db"\n')
    result = hearth("--config", "flag.toml", "couple", "list", HEARTH_CONFIG="env.toml")
    assert one_line(result, 1) == _uses("sqlite:///flag.db")


def test_environment_overrides_the_file_key_by_key() -> None:
    write("hearth.toml", '[database]\nurl = "sqlite:///file.db"\n[daemon]\nconcurrency = "x"\n')
    # The file's bad value is overridden, so it is never used, and the URL still comes from
    # the file.
    result = hearth("couple", "list", HEARTH_DAEMON_CONCURRENCY="3")
    assert one_line(result, 1) == _uses("sqlite:///file.db")
    result = hearth(
        "couple", "list", HEARTH_DAEMON_CONCURRENCY="3", HEARTH_DATABASE_URL="sqlite:///env.db"
    )
    assert one_line(result, 1) == _uses("sqlite:///env.db")


def test_an_unreachable_postgresql_is_one_line_and_exit_1() -> None:
    # Port 1 on the loopback: nothing listens, so the connection is refused at once.
    url = "postgresql+psycopg://hearth:secret@127.0.0.1:1/hearth"
    line = one_line(hearth("couple", "list", HEARTH_DATABASE_URL=url), 1)
    assert line.startswith(
        "error: database unreachable at postgresql+psycopg://hearth:***@127.0.0.1:1/hearth: "
    ), line
    assert "secret" not in line


def test_an_unopenable_sqlite_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/hearth.db"
    line = one_line(hearth("couple", "add", "A & B", "-z", "UTC", HEARTH_DATABASE_URL=url), 1)
    assert line == f"error: database unreachable at {url}: unable to open database file"


def test_init_writes_a_starter_file_and_never_overwrites_unasked() -> None:
    assert one_line(hearth("init"), 0) == (
        "wrote hearth.toml; wrote encryption key hearth.key; next: hearth db upgrade"
    )
    starter = Path("hearth.toml").read_text(encoding="utf-8")
    key = Path("hearth.key").read_text(encoding="utf-8")
    assert Path("hearth.key").stat().st_mode & 0o777 == 0o600
    settings = load_settings(None, environ={})  # ./hearth.toml, as every command finds it
    assert settings.database.url == "sqlite:///hearth.db"
    assert settings.channels.sms == "console" and settings.channels.email == "console"
    assert settings.encryption.keys.get_secret_value() == key.strip()  # answers are kept

    Path("hearth.toml").write_text("# mine\n", encoding="utf-8")
    line = one_line(hearth("init"), 2)
    assert line == "error: path: hearth.toml already exists (use --force to overwrite)"
    assert Path("hearth.toml").read_text(encoding="utf-8") == "# mine\n"

    # --force rewrites the config, never the key: what was sealed under it stays readable.
    assert one_line(hearth("init", "--force"), 0) == (
        "wrote hearth.toml; kept the existing encryption key hearth.key; next: hearth db upgrade"
    )
    assert Path("hearth.toml").read_text(encoding="utf-8") == starter
    assert Path("hearth.key").read_text(encoding="utf-8") == key
    assert one_line(hearth("init", "--path", "other.toml"), 0).startswith("wrote other.toml")
    line = one_line(hearth("init", "--path", "no/such/dir/h.toml"), 2)
    assert line == "error: path: cannot write no/such/dir/h.toml: No such file or directory"


def test_the_key_file_is_read_beside_its_config_and_named_when_it_is_wrong() -> None:
    Path("site").mkdir()
    one_line(hearth("init", "--path", "site/hearth.toml"), 0)
    key = Path("site/hearth.key").read_text(encoding="utf-8").strip()
    # From another directory: the relative key_file is the one beside the config.
    settings = load_settings("site/hearth.toml", environ={})
    assert settings.encryption.keyring.keys == (key,)
    # One line naming what is wrong, exit 2.
    Path("site/hearth.key").unlink()
    assert one_line(hearth("--config", "site/hearth.toml", "couple", "list"), 2) == (
        "error: config: encryption: cannot read key_file site/hearth.key: No such file or"
        " directory (from site/hearth.toml)"
    )
    Path("site/hearth.key").write_text("\n", encoding="utf-8")
    assert one_line(hearth("--config", "site/hearth.toml", "couple", "list"), 2) == (
        "error: config: encryption: key_file site/hearth.key is empty (from site/hearth.toml)"
    )
    Path("site/hearth.key").write_text("not-a-key\n", encoding="utf-8")
    assert one_line(hearth("--config", "site/hearth.toml", "couple", "list"), 2) == (
        "error: config: encryption.keys: key 1 is not a Fernet key (32 url-safe base64 bytes);"
        " make one with `hearth crypto new-key` (from site/hearth.toml)"
    )
    assert one_line(hearth("init", "--path", "site/hearth.toml", "--force"), 2) == (
        "error: key-file: site/hearth.key: key 1 is not a Fernet key (32 url-safe base64 bytes)"
        " (move it away or give another --key-file)"
    )
    # Two keys a line each (a rotation) read as the comma-separated list.
    second = new_key()
    Path("site/hearth.key").write_text(f"{second}\n{key}\n", encoding="utf-8")
    assert load_settings("site/hearth.toml", environ={}).encryption.keyring.keys == (second, key)
    both = hearth("--config", "site/hearth.toml", "couple", "list", HEARTH_ENCRYPTION_KEYS=key)
    assert one_line(both, 2) == (
        "error: config: encryption: set either keys or key_file, not both (from site/hearth.toml)"
    )


def test_sqlite_runs_in_wal_mode_with_foreign_keys_on() -> None:
    app = Hearth.from_settings(load_settings(None, environ={}))  # ./hearth.db, as `make run`
    try:
        with app.db.session() as s:
            assert s.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        migrate.upgrade(app.db)
        orphan = Partner(
            couple_id=999,
            name="Nobody",
            timezone="UTC",
            created_at=app.clock.now(),
            updated_at=app.clock.now(),
        )
        with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"), app.db.session() as s:
            s.add(orphan)
    finally:
        app.db.dispose()


def test_the_environment_source_overrides_no_private_method_of_pydantic_settings() -> None:
    """It is a ``PydanticBaseSettingsSource`` (the public extension point): nothing of its
    own is a pydantic-settings internal it replaces."""
    from service.core import config

    mine = vars(config._EnvironSource)
    own = [n for n in mine if n.startswith("_") and not n.endswith("__") and n != "_abc_impl"]
    assert own == []
    assert config._EnvironSource.__bases__ == (config.PydanticBaseSettingsSource,)
