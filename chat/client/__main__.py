"""``python -m chat.client``: the same as the ``chat-client`` console script."""

import sys

from chat.client.cli import main

sys.exit(main())
