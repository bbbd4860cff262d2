"""Entry point: `python -m services.retrieval`."""

from services.common.event_loop import run
from services.common.logs import setup_logging
from services.common.server import serve
from services.common.tracing import configure_tracing
from services.retrieval.config import RetrievalSettings
from services.retrieval.server import create_server


async def main() -> None:
    settings = RetrievalSettings.from_env()
    running = await create_server(settings, freeze_heap=True)
    await serve(running, settings.server.shutdown_grace_seconds)


if __name__ == "__main__":
    setup_logging("retrieval")
    configure_tracing("retrieval")
    run(main)
