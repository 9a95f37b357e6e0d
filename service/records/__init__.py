"""What was inspected, on the record: one row per inspected frame in a database (SQLite by default, PostgreSQL when
configured; tables, migrations, store), written off the request path through a durable spool (spool, recorder),
and the frames the retention policy keeps (archive); the content-addressed blobs (blobs) and the change feed between
replicas (changes) the product registry shares. See docs/records.md."""
