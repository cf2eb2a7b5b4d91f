"""Who refreshes: the lease, the clocks, succession, the follower, the announcement."""
