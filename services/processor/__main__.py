"""``python -m services.processor``: run the processor until SIGINT/SIGTERM."""

from services.processor.app import create_app
from shared.service import run_service

if __name__ == "__main__":
    run_service(create_app)
