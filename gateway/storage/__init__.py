"""Storage (I/O): database engines and Alembic migrations (:mod:`~gateway.storage.db`,
:mod:`~gateway.storage.migrations_env`), the column types and constraint naming convention every part's schema
shares (:mod:`~gateway.storage.schema`), and the one transaction helper that turns a unique-constraint violation
or a database failure into the caller's fault (:mod:`~gateway.storage.transaction`).

Every part that keeps state (central server, security server: serverconf, message log, admin API) has its own
schema, Alembic script directory and version table. SQLite (WAL) is the embedded default, PostgreSQL the
production backend; the test suite runs on both.
"""
