"""The broker: the publisher, the refresh-request listener, operators' control requests."""
