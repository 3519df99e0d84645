"""``python tests/emulator serve|run|runtime-api``: the emulator's command line (see the package
docstring)."""

import os
import sys

# Run as ``python tests/emulator``, this directory is sys.path[0]: its modules (``calls``,
# ``server``, ...) would shadow top-level modules of those names. Import the package from its
# parent directory instead (``python -m emulator`` from tests/ already does).
HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == HERE:
    sys.path[0] = os.path.dirname(HERE)

if sys.argv[1:2] == ["runtime-api"]:
    from emulator.runtime_api import main  # the stub alone: no moto to import
else:
    from emulator.server import main

sys.exit(main())
