"""`python -m bench.airlock`: how fast the async-call airlock drains calls that are due.

N calls are stored due in a fresh Postgres database, then `--workers` Sluice processes drain
them: each call is replayed through `POST /v1/purchases` against a fast fake partner
(`upstream.py`) and its reply is POSTed to a local receiver (`receiver.py`), which counts the
`webhook-id`s. `__main__.py` prints replies/s, duplicates and the CPU time per call.
"""
