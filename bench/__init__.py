"""Benchmarks. Each is a module run from the repository root: `.venv/bin/python -m bench.<name> [--help]`
(`make bench` runs them all through `bench.run_all`); being a package, they import one another as `bench.*`."""
