"""`make bench`: the project's benchmarks. Timing goals live here, never in timed tests."""
