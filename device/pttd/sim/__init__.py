"""Simulated hardware and the builders the demo, the benchmarks and the tests share."""
