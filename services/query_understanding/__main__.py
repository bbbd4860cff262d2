"""Entry point: `python -m services.query_understanding`."""

from services.common.event_loop import run
from services.common.logs import setup_logging
from services.common.server import serve
from services.common.tracing import configure_tracing
from services.query_understanding.config import QueryUnderstandingSettings
from services.query_understanding.server import create_server


async def main() -> None:
    settings = QueryUnderstandingSettings.from_env()
    running = await create_server(settings)
    await serve(running, settings.server.shutdown_grace_seconds)


if __name__ == "__main__":
    setup_logging("query_understanding")
    configure_tracing("query_understanding")
    run(main)
