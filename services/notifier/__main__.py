"""``python -m services.notifier``: run the notifier until SIGINT/SIGTERM."""

import asyncio

from services.notifier.app import create_app

if __name__ == "__main__":
    asyncio.run(create_app().run())
