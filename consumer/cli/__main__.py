"""``python -m consumer.cli``: the same as the ``healthfsm`` command."""

import sys

from consumer.cli.app import main

sys.exit(main())
