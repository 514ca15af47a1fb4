"""HTTP plumbing shared by every API: Matrix errors, JSON bodies, middlewares."""

from .errors import Codes, MatrixError
from .json import json_response, large_json_response, read_json_body

__all__ = ["Codes", "MatrixError", "json_response", "large_json_response", "read_json_body"]
