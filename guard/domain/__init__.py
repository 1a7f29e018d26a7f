"""Domain values and rules: pure, importing nothing else of guard and no I/O.

The error tree (``errors``), instance and audit states (``states``), DICOM UIDs and times,
DIMSE status codes (``status``), the structural check of a data set (``structure``), IOCM
rejection notes (``iocm``), the delete decision (``decision``), the retry policy (``retry``),
the admission policy (``admission``), log redaction and refusal throttling.
"""
