"""Unknown configuration keys: refused in the file with the nearest valid key, warned about in the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guard.config.settings import Settings, load_settings
from guard.config.unknown import UnknownKey, environment_names, unknown_environment, unknown_file_keys
from guard.domain.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("GUARD_")]:
        monkeypatch.delenv(name)


def test_file_keys_are_named_by_section_path_with_the_nearest_key() -> None:
    """Each unknown key of a parsed file is reported by its path, with the closest key of the same section."""
    data = {
        "archive": {"prot": 4242, "host": "vna"},
        "forwrd": {"workers": 3},
        "sources": [{"ae_title": "PACS"}, {"ae_title": "RIS", "hots": "10.0.0.9"}],
        "http": {"tokens": [{"identity": "a", "scopez": ["read"]}]},
    }
    expected = [
        UnknownKey("archive.prot", "archive.port"),
        UnknownKey("forwrd", "forward"),
        UnknownKey("sources[1].hots", "sources[1].host"),
        UnknownKey("http.tokens[0].scopez", "http.tokens[0].scopes"),
    ]
    assert expected == unknown_file_keys(data, Settings)


def test_a_key_with_nothing_close_has_no_suggestion() -> None:
    """A key unlike any valid one is still reported, without a guess."""
    assert [UnknownKey("node.xyzzy", None)] == unknown_file_keys({"node": {"xyzzy": 1}}, Settings)


def test_a_valid_file_has_no_unknown_keys() -> None:
    """Every section and key of the model, including lists of tables, is known."""
    data = {
        "node": {"port": 104, "data_dir": "/srv"},
        "sources": [{"ae_title": "PACS", "host": "h", "allowed_addresses": ["10.0.0.0/8"]}],
        "http": {"tokens": [{"identity": "a", "scopes": ["read"], "sha256": "0" * 64}]},
        "audit": {"syslog_host": ""},
    }
    assert unknown_file_keys(data, Settings) == []


def test_environment_names_follow_the_section_key_form() -> None:
    """GUARD_<SECTION>__<KEY> for every key, GUARD_<SECTION> for whole sections, and GUARD_CONFIG."""
    names = environment_names(Settings)
    assert {"GUARD_ARCHIVE__PORT", "GUARD_FORWARD__WORKERS", "GUARD_SOURCES", "GUARD_HTTP__TOKENS", "GUARD_CONFIG"} <= names
    assert "GUARD_SOURCES__HOST" not in names  # a list of tables is given whole, as JSON


def test_unknown_environment_variables_are_found_with_a_suggestion() -> None:
    """Only GUARD_* variables that set nothing are reported, in either case; other programs' variables are not."""
    environ = {
        "GUARD_CONFIG": "/etc/guard/guard.toml",
        "guard_archive__port": "4242",
        "GUARD_FORWRD__WORKERS": "3",
        "GUARD_ARCHIVE_PORT": "4242",
        "PATH": "/usr/bin",
        "GUARDIAN": "x",
    }
    expected = [
        UnknownKey("GUARD_ARCHIVE_PORT", "GUARD_ARCHIVE__PORT"),
        UnknownKey("GUARD_FORWRD__WORKERS", "GUARD_FORWARD__WORKERS"),
    ]
    assert expected == unknown_environment(environ, Settings)


def test_load_refuses_a_file_with_a_typo(tmp_path: Path) -> None:
    """A misspelt key stops the load with its path and the key meant, rather than leaving the default in force."""
    path = tmp_path / "guard.toml"
    path.write_text("[forward]\nworkrs = 4\n\n[[sources]]\nae_title = 'PACS'\nhots = '10.0.0.5'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "forward.workrs: unknown key; did you mean forward.workers?" in message
    assert "sources[0].hots: unknown key; did you mean sources[0].host?" in message


def test_load_ignores_an_unknown_variable_and_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown GUARD_* variable does not stop the load, leaves the default in force and is kept for the warning."""
    path = tmp_path / "guard.toml"
    path.write_text("[node]\nport = 4104\n")
    monkeypatch.setenv("GUARD_NODE__PORTT", "5000")
    monkeypatch.setenv("GUARD_FORWARD__WORKERS", "3")
    settings = load_settings(path)
    assert settings.node.port == 4104
    assert settings.forward.workers == 3
    assert (UnknownKey("GUARD_NODE__PORTT", "GUARD_NODE__PORT"),) == settings.unknown_environment


def test_guard_config_is_not_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GUARD_CONFIG names the file; it is not a setting and not reported."""
    path = tmp_path / "guard.toml"
    path.write_text("[node]\nport = 4104\n")
    monkeypatch.setenv("GUARD_CONFIG", str(path))
    assert load_settings(None).unknown_environment == ()
