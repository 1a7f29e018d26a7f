"""Proof of bytes: the archive hands instances back and their digest is compared with the one recorded on receipt.

- ``retriever``: the ``ByteRetriever`` protocol every way of retrieving implements (C-GET in
  ``guard.dicom.retrieve``, C-MOVE to the guard in ``move``, WADO-RS for a DICOMweb archive);
- ``move``: retrieval by C-MOVE to the guard itself, through the relay's registry of moves in flight;
- ``choose``: the retriever ``verify.retrieve`` names (``auto``: C-GET, else C-MOVE);
- ``verifier``: the policies (at confirmation, rolling re-verification, delete-time sample)
  and what a result does (``guard.ledger.byte_checks``).
"""
