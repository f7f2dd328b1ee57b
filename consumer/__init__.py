"""The Redis side of healthfsm: codecs, the batched read loop, the outbox relay and the CLI."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
