"""Products: the store (versions on disk, shared by replicas), labelled frames, the store's sync with other
replicas, and the workflows that change a product (upload references, calibrate, feedback)."""
