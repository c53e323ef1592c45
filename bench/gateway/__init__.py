"""`python -m bench.gateway`: Sluice against a bare FastAPI + aiohttp passthrough.

Both forward `GET /v1/products` to the same fast fake partner (`upstream.py`); the load
generator (`load.py`: wrk when installed, else a Python aiohttp client) drives each with the same
number of keep-alive connections, and `__main__.py` prints req/s, p50, p99 and the ratios.
"""
