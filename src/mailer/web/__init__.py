"""Web: the browser preview, the public site (archive, unsubscribe, subscribe) and publishing."""
