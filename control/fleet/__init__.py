"""The execution fleet: orchestrators attached over their sessions (links), the placement of
queued runs on them (scheduler, placement)."""
