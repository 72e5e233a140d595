"""`inv` and `fab` in a checkout read this file: the package's task tree (the one the installed
`vedfin` command runs) plus the sandbox's tasks, which live in the repository only."""

from invoke.collection import Collection

from sandbox.tasks import ns as _sandbox
from vedfin_ops.cli.tasks import ns as _package

ns = Collection()
for _name, _task in _package.tasks.items():
    ns.add_task(_task, name=_name)
for _name, _sub in _package.collections.items():
    ns.add_collection(_sub, name=_name)
ns.add_collection(_sandbox)
