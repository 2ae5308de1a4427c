"""``python -m services.poller``: run the poller until SIGINT/SIGTERM."""

from services.poller.app import create_app
from shared.service import run_service

if __name__ == "__main__":
    run_service(create_app)
