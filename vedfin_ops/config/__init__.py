"""The config file: its model, loader, units, secrets and tag rule."""
