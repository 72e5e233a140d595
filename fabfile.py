"""`fab` in a checkout reads this file: the same task tree as `inv` and `vedfin`."""

from vedfin_ops.cli.tasks import ns  # noqa: F401
