from guard.config.settings import ArchiveProtocol, ArchiveSettings, Settings
from guard.dicom.archive import DimseArchive
from guard.services.archive import open_archive
from guard.web.dicomweb import DicomWebArchive
from guard.web.stow import StowSender


def test_the_protocol_picks_the_adapter() -> None:
    """archive.protocol = dimse builds the DIMSE archive (C-STORE sender), dicomweb the DICOMweb one (STOW-RS sender)."""
    dimse = open_archive(Settings(archive=ArchiveSettings(host="10.0.0.1", port=104)))
    web = open_archive(Settings(archive=ArchiveSettings(protocol=ArchiveProtocol.DICOMWEB, url="https://vna.example/dicom-web/")))
    assert (DimseArchive, "ARCHIVE@10.0.0.1:104") == (type(dimse), dimse.description)
    assert (DicomWebArchive, "https://vna.example/dicom-web", StowSender) == (type(web), web.description, type(web.sender()))
