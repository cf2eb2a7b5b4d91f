"""One credential's refresh: its state machine, timing, tickets, reports and operator requests."""
