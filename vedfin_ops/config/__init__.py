"""The config file: its model, loader, units, secrets and tag rule; the names the tool gives
things on the host, PostgreSQL's settings, and which env plays production's roles."""
