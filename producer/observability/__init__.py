"""Metrics, the status port, logging and outage lines."""
