"""`fab` in a checkout reads this file: the same task tree as `inv` (tasks.py)."""

from tasks import ns  # noqa: F401
