"""`inv` and `fab` in a checkout read this file: the task tree lives in the package
(`vedfin_ops.cli.tasks`), so the installed `vedfin` command runs the same tasks."""

from vedfin_ops.cli.tasks import ns  # noqa: F401
