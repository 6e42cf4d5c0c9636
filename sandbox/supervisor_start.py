"""Starts the in-sandbox supervisor (``astraforge_supervisor.py`` beside this file, i.e.
``sandbox/supervisor.py``) from the bytecode the host compiled for it.

Python compiles a script it runs on every start (about 30 ms of CPU for the supervisor, a third of
its start, paid by every sandbox create), but an imported module loads from ``__pycache__``: the
host writes a checked-hash ``.pyc`` there (``sandbox/providers/base.py``). The interpreter uses it
only if its magic number and cache tag are its own and the source's hash matches; otherwise it
compiles the source as before. The directory is a read-only tmpfs, so nothing is written back.

This file's directory is put first on ``sys.path`` here rather than left to python: an image whose
environment sets ``PYTHONSAFEPATH`` (a docker image's ``ENV`` reaches the supervisor) leaves it out,
and the supervisor would not start, or would be whatever ``astraforge_supervisor`` the image ships.
"""

import os
import sys

if __name__ == "__main__":  # only as the first process: importing it (the wheel test imports all) does nothing
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    from astraforge_supervisor import main

    main()
