"""Migration revisions, one file each, applied in order."""
