"""One router per resource: health (liveness, readiness, metrics), products, inspect."""
