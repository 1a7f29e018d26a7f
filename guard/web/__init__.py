"""HTTP clients of other systems (httpx, the one seam for it): the delete backends (Orthanc REST, DICOMweb)."""
