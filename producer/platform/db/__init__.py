"""The platform registry: the chain's durable parts in PostgreSQL or MySQL/MariaDB (the
`platform` extra: SQLAlchemy 2 Core, Alembic, psycopg, PyMySQL). See `producer.platform`."""
