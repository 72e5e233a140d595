from tasks import ns  # noqa: F401  (fab reads the same task tree as inv)
