"""The delete gate: the live checks around the pure decision in ``guard.domain.decision``."""
