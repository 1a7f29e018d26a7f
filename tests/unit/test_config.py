import re
from pathlib import Path

import pytest

from guard.config.settings import ConfirmMode, load_settings, redacted
from guard.domain.errors import ConfigError

TOML = """
[node]
ae_title = "GUARD1"
port = 4104
data_dir = "/srv/guard"

[[sources]]
ae_title = "PACS"
host = "10.0.0.5"
port = 104

[archive]
ae_title = "VNA"
host = "vna.example"
port = 11112
confirm = "both"

[http]
token = "s3cret"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("GUARD_")]:
        monkeypatch.delenv(name)


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(body)
    return path


def test_defaults_need_no_file() -> None:
    """Without a file the guard has working defaults: SQLite under var/, the built-in archive."""
    settings = load_settings(None)
    assert settings.ledger_url == "sqlite:///var/ledger.sqlite"
    assert settings.archive.builtin
    assert settings.archive.confirm is ConfirmMode.COMMITMENT
    assert settings.http.bind == "127.0.0.1"


def test_toml_file_is_read(tmp_path: Path) -> None:
    """Every section of the TOML file reaches the settings."""
    settings = load_settings(_write(tmp_path, TOML))
    assert settings.node.ae_title == "GUARD1"
    assert settings.node.port == 4104
    assert settings.sources[0].ae_title == "PACS"
    assert settings.source("PACS") is not None
    assert settings.source("OTHER") is None
    assert settings.archive.confirm is ConfirmMode.BOTH
    assert not settings.archive.builtin


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GUARD_<SECTION>__<KEY> wins over the file, and GUARD_CONFIG names the file."""
    monkeypatch.setenv("GUARD_CONFIG", str(_write(tmp_path, TOML)))
    monkeypatch.setenv("GUARD_ARCHIVE__PORT", "4242")
    monkeypatch.setenv("GUARD_NODE__AE_TITLE", "FROMENV")
    settings = load_settings(None)
    assert settings.archive.port == 4242
    assert settings.node.ae_title == "FROMENV"
    assert settings.archive.ae_title == "VNA"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[archive]\nport = 'abc'\n", "archive.port"),
        ("[archive]\nport = 70000\n", "archive.port"),
        ("[archive]\nconfirm = 'maybe'\n", "archive.confirm"),
        ("[node]\nae_title = 'MUCH_TOO_LONG_AE_TITLE'\n", "node.ae_title"),
        ("[node]\nprot = 1\n", "node.prot: unknown key"),
        ("[[sources]]\nhost = 'x'\n", "sources.0.ae_title"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, body: str, expected: str) -> None:
    """A bad value is refused at load time with the key that holds it."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, body))
    assert expected in str(info.value)


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment override is validated like the file."""
    monkeypatch.setenv("GUARD_FORWARD__WORKERS", "many")
    with pytest.raises(ConfigError, match=r"forward\.workers"):
        load_settings(None)


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    """A broken file gives a ConfigError naming the file, not a traceback."""
    path = _write(tmp_path, "[node\nport = 1")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_settings(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A configuration path that does not exist is an error, not silently the defaults."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_secrets_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token and a database password never appear in the printed configuration."""
    monkeypatch.setenv("GUARD_LEDGER__URL", "postgresql+psycopg://guard:hunter2@db/guard")
    data = redacted(load_settings(_write(tmp_path, TOML)))
    text = repr(data)
    assert "s3cret" not in text
    assert "hunter2" not in text
    assert data["http"]["token"] == "***"
    assert data["ledger"]["url"] == "postgresql+psycopg://guard:***@db/guard"
