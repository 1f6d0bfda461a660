"""What a write does when a record's key already holds other content: part of the cell
spec the coordinator hands an agent, and the rule every store backend applies."""
from __future__ import annotations

from typing import Literal, get_args

ClashPolicy = Literal["reject", "replace", "keep-both"]
CLASH_POLICIES: tuple[str, ...] = get_args(ClashPolicy)
