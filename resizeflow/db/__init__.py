"""Database layer: models, sessions, compare-and-swap helpers and migrations."""
