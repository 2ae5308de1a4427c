"""A local stand-in for the Lengow API (tests, benchmarks and ``make run``); not shipped."""
