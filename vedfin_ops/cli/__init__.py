"""The task tree, the `vedfin` program and what a person sees on the terminal."""
