"""`python -m bench.throttle`: deployed throttling configurations under full load (see bench/README.md)."""
