"""The built-in reference archive: a sandbox DICOM peer for ``make run`` and the tests, never for production."""
