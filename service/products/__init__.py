"""Products: the store (the product registry: rows in the records database, reference banks as blobs; shared by
replicas), labelled frames, the blob collector, the import of the old folder store, and the workflows that change a
product (upload references, calibrate, feedback)."""
