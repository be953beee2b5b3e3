"""Compose: an issue file becomes a validated model, then email HTML, text and the web version."""
