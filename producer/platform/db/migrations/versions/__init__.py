"""The registry's schema versions, oldest first (`0001_...`); Alembic reads them as files."""
