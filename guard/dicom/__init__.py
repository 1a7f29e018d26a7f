"""The DICOM side of the guard: association policy, thin handlers, and status codes."""
