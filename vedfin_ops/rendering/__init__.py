"""Config -> files: the Jinja templates and writing them locally."""
