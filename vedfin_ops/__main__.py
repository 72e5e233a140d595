"""`python -m vedfin_ops ...` is the `vedfin` command."""

from vedfin_ops.cli.main import main

main()
