"""Entry point: `python -m services.gateway`."""

from services.common.event_loop import run
from services.common.logs import setup_logging
from services.common.server import serve
from services.common.tracing import configure_tracing
from services.gateway.config import GatewaySettings
from services.gateway.server import create_server


async def main() -> None:
    settings = GatewaySettings.from_env()
    running = await create_server(settings)
    await serve(running, settings.server.shutdown_grace_seconds)


if __name__ == "__main__":
    setup_logging("gateway")
    configure_tracing("gateway")
    run(main)
