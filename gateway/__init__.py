"""Gateway: a Matrix homeserver built for federation and single sign-on."""

__version__ = "0.1.0"
