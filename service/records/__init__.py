"""What was inspected, on the record: one row per inspected frame in a database (SQLite by default, PostgreSQL when
configured; tables, migrations, store), written off the request path through a durable spool (spool, recorder),
and the frames the retention policy keeps (archive). See docs/records.md."""
