"""Entry point: `python -m services.cli` (same as the `shelfwise` console script)."""

from services.cli.main import main

raise SystemExit(main())
