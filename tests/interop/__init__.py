"""Tests against real third-party DICOM peers (DCMTK, Orthanc)."""
