"""Delivery: per-recipient messages, the SMTP pool, the ledger and the send itself."""
