"""`python -m bench.sync`: two Sluice instances, A and B, converging (see bench/README.md).

N orders are created on B through its API while both instances' sync loops run, then a share of
them is edited on A and on B at once. `__main__.py` prints the orders synced per second, the
collisions found against those made, the orders lost and the writes sent across per change (the
echo factor); `api.py` holds the HTTP calls and the content comparison.
"""
