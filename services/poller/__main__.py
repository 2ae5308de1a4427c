"""``python -m services.poller``: run the poller until SIGINT/SIGTERM."""

import asyncio

from services.poller.app import create_app

if __name__ == "__main__":
    asyncio.run(create_app().run())
