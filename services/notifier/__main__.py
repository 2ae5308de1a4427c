"""``python -m services.notifier``: run the notifier until SIGINT/SIGTERM."""

from services.notifier.app import create_app
from shared.service import run_service

if __name__ == "__main__":
    run_service(create_app)
