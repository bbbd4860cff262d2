"""The `shelfwise` command line: run the system locally and talk to it."""
