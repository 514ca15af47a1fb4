"""Storage: one async database API (SQLite and PostgreSQL), migrations, stores."""

from .database import Connection, Database, IntegrityError, UnstorableTextError, open_database
from .migrations import SchemaTooNewError, migrate

__all__ = ["Connection", "Database", "IntegrityError", "SchemaTooNewError", "UnstorableTextError", "migrate",
           "open_database"]
