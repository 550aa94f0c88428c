"""The store's second engine: PostgreSQL (DATABASE_URL=postgresql://…), for several bot processes on one
database. `PostgresStore` (store.core) joins this engine to the same area classes as the SQLite `Store`;
each SQLite query has a PostgreSQL twin here, one module per area, and schema.py has the migrations.
"""
