"""The delete gate: a study may be deleted only when the archive holds a confirmed, complete copy."""
