import os
from pathlib import Path

import pytest

from guard.config.settings import ArchiveAuth, ArchiveProtocol, ConfirmMode, load_settings
from guard.domain.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GUARD_")]:
        monkeypatch.delenv(name)


def test_a_dicomweb_archive_confirms_by_find_and_is_not_the_builtin(tmp_path: Path) -> None:
    """Protocol = dicomweb with a url: confirm defaults to find (QIDO-RS), and no built-in archive starts."""
    settings = load_settings(_write_file(tmp_path, 'protocol = "dicomweb"\nurl = "https://vna.example/dicom-web"\n'))
    assert (settings.archive.protocol, settings.archive.confirm, settings.archive.builtin) == (
        ArchiveProtocol.DICOMWEB,
        ConfirmMode.FIND,
        False,
    )
    assert settings.archive.where == "https://vna.example/dicom-web"


def test_protocol_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GUARD_ARCHIVE__PROTOCOL and GUARD_ARCHIVE__URL make a DICOMweb archive like the file does."""
    monkeypatch.setenv("GUARD_ARCHIVE__PROTOCOL", "dicomweb")
    monkeypatch.setenv("GUARD_ARCHIVE__URL", "http://127.0.0.1:8042/dicom-web")
    settings = load_settings(None)
    assert (settings.archive.protocol, settings.archive.confirm) == (ArchiveProtocol.DICOMWEB, ConfirmMode.FIND)


def _write_file(tmp_path: Path, archive: str) -> Path:
    path = tmp_path / "guard.toml"
    path.write_text("[archive]\n" + archive)
    return path


@pytest.mark.parametrize(
    ("archive", "expected"),
    [
        ('protocol = "dicomweb"\n', "archive.url must be the http:// or https:// base URL"),
        ('protocol = "dicomweb"\nurl = "ftp://vna/dicom-web"\n', "archive.url must be the http:// or https:// base URL"),
        ('protocol = "dicomweb"\nurl = "https://u:pw@vna/dicom-web"\n', "must not carry credentials"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nconfirm = "commitment"\n', "DICOMweb has no Storage Commitment"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nconfirm = "both"\n', "confirm = both is not possible"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\ntls = true\n', "archive.url is https://"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nauth = "bearer"\n', "archive.token_file is required"),
        (
            'protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nauth = "bearer"\ntoken_file = "/nonexistent/token"\n',
            "archive.token_file: cannot read",
        ),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nauth = "basic"\n', "archive.username is required"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nauth = "basic"\nusername = "g"\n', "archive.password_file is required"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\ntoken_file = "/etc/hostname"\n', "archive.auth = none"),
        ('protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nca_file = "/nonexistent/ca.pem"\n', "archive.ca_file"),
    ],
)
def test_invalid_dicomweb_settings_are_refused_at_load(tmp_path: Path, archive: str, expected: str) -> None:
    """Each incomplete or contradictory DICOMweb archive is a ConfigError naming the key, at load time."""
    with pytest.raises(ConfigError) as info:
        load_settings(_write_file(tmp_path, archive))
    assert expected in str(info.value)


def test_an_empty_token_file_is_refused_and_its_content_never_shown(tmp_path: Path) -> None:
    """An empty credentials file is refused; a readable one loads, and its content appears in no error or dump."""
    token = tmp_path / "token"
    token.write_text("  \n")
    body = f'protocol = "dicomweb"\nurl = "https://vna/dicom-web"\nauth = "bearer"\ntoken_file = "{token}"\n'
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(_write_file(tmp_path, body))
    token.write_text("very-secret-token")
    settings = load_settings(_write_file(tmp_path, body))
    assert settings.archive.auth == ArchiveAuth.BEARER
    assert "very-secret-token" not in settings.model_dump_json()


def test_a_dicomweb_archive_is_byte_checked_exactly(tmp_path: Path) -> None:
    """verify.compare = content with protocol = dicomweb is refused at load: WADO-RS returns the held bytes, compared exactly."""
    path = _write_file(tmp_path, 'protocol = "dicomweb"\nurl = "https://vna.example/dicom-web"\n')
    path.write_text(path.read_text() + '[verify]\ncompare = "content"\n')
    with pytest.raises(ConfigError, match=r"verify\.compare = content"):
        load_settings(path)
