"""The batch engine: skip what is done, batch, prefetch, isolate failures, record, write."""
