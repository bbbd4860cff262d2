"""Entry point: `python -m services.events`."""

from services.common.event_loop import run
from services.common.logs import setup_logging
from services.common.server import serve
from services.common.tracing import configure_tracing
from services.events.config import EventsSettings
from services.events.server import create_server


async def main() -> None:
    settings = EventsSettings.from_env()
    running = await create_server(settings)
    await serve(running, settings.server.shutdown_grace_seconds)


if __name__ == "__main__":
    setup_logging("events")
    configure_tracing("events")
    run(main)
