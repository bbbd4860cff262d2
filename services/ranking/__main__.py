"""Entry point: `python -m services.ranking`."""

from services.common.event_loop import run
from services.common.logs import setup_logging
from services.common.server import serve
from services.common.tracing import configure_tracing
from services.ranking.config import RankingSettings
from services.ranking.server import create_server


async def main() -> None:
    settings = RankingSettings.from_env()
    running = await create_server(settings)
    await serve(running, settings.server.shutdown_grace_seconds)


if __name__ == "__main__":
    setup_logging("ranking")
    configure_tracing("ranking")
    run(main)
