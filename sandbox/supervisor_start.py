"""Starts the in-sandbox supervisor (``astraforge_supervisor.py`` beside this file, i.e.
``sandbox/supervisor.py``) from the bytecode the host compiled for it.

Python compiles a script it runs on every start (about 30 ms of CPU for the supervisor, a third of
its start, paid by every sandbox create), but an imported module loads from ``__pycache__``: the
host writes a checked-hash ``.pyc`` there (``sandbox/providers/base.py``). The interpreter uses it
only if its magic number and cache tag are its own and the source's hash matches; otherwise it
compiles the source as before. The directory is a read-only tmpfs, so nothing is written back.
"""

from astraforge_supervisor import main

main()
