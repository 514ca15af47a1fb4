"""Storage: one async database API (SQLite and PostgreSQL), migrations, stores."""

from .database import Connection, Database, IntegrityError, UnstorableTextError, open_database
from .migrations import SchemaTooNewError, check_schema, migrate

__all__ = ["Connection", "Database", "IntegrityError", "SchemaTooNewError", "UnstorableTextError", "check_schema",
           "migrate", "open_database"]
