"""Reusable test support: free ports, polling, synthetic DICOM data and real peers (DCMTK, Orthanc)."""
