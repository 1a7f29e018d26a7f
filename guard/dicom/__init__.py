"""The DICOM adapter: every outbound DICOM conversation, and the boundary around inbound handlers.

- ``conversation``: the one AE builder, the C-FIND and C-MOVE loops, C-ECHO, C-CANCEL, and the
  only place where pynetdicom outcomes become ``PeerError``s.
- ``net``: peers, socket tuning, association set-up (TLS pins, ``ArchiveUnreachableError``).
- ``store`` (C-STORE), ``commitment`` (N-ACTION, N-EVENT-REPORT, C-FIND proof), ``probe``
  (C-ECHO), ``suboperations`` (the association to a C-MOVE destination), ``tls`` (per-peer policy).
- ``boundary``: what an inbound handler did not expect becomes a failure status and a report.
"""
