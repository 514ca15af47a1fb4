"""Storage: one async database API (SQLite and PostgreSQL), migrations, stores."""

from .database import Connection, Database, IntegrityError, open_database
from .migrations import SchemaTooNewError, migrate

__all__ = ["Connection", "Database", "IntegrityError", "SchemaTooNewError", "migrate", "open_database"]
