"""Moved to `ops.sandbox`; this name stays until every importer uses the package."""

from .sandbox import *  # noqa: F403
from .sandbox import __all__ as __all__
