"""The engine: the model worker (admission, batching, the forward pass on the one thread that owns the model) and
the pipeline around it (decode and prepare in the decode pool, maps and results in the encode pool)."""
