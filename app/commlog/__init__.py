"""Communication log: one record per gateway request, buffered in memory, written in batches."""
