"""``python -m builders.build_repository``: the repository build, which lives in :mod:`spinrec.export.repository`
so that an installed package (and the launcher) can build without this folder."""

import sys

from spinrec.export.repository import main

if __name__ == "__main__":
    sys.exit(main())
