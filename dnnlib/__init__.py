"""Small shared utilities (no project imports)."""
from .util import EasyDict, open_url, UserError  # noqa: F401
