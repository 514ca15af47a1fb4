"""Moving a deployment: our SQLite database into PostgreSQL (``gateway port-db``), and a
Synapse deployment into ours (``gateway import-synapse``). See docs/porting.md."""


class PortingError(Exception):
    """A porting tool refuses to go on; the message says why and what to do."""
