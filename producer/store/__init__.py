"""Redis: tokens by compare-and-set, versions, the audit trail, the Functions library."""
