"""``python -m services.processor``: run the processor until SIGINT/SIGTERM."""

import asyncio

from services.processor.app import create_app

if __name__ == "__main__":
    asyncio.run(create_app().run())
