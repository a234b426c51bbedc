"""Simulators that run the ledger's own rules with no ledger (``agora sim ...``)."""
