"""Running the whole system on one machine: PostgreSQL, the five services, the catalogue.

Used by `shelfwise up`, the benchmarks, the evaluations, the simulator and the tests; it imports
nothing from training/ or the CLI, so all of them can use it without an import circle."""
