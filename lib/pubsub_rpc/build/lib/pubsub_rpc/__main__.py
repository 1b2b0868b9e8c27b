"""``python -m pubsub_rpc call ACTION [JSON] [--timeout S]``: see ``pubsub_rpc.cli``."""

from .cli import main

raise SystemExit(main())
