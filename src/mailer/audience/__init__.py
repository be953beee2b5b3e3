"""Audience: the database of lists, subscribers and suppressions, and CSV import/export."""
