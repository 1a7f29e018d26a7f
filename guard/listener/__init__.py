"""The DICOM listener, an entry point: the association server, its limits, TLS handshakes, and thin handlers that call the services."""
