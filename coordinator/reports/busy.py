"""What the busy-machine guard (agent.machine.quiet) saw, as every report says it.

A record keeps one look per measured process under hygiene["processes"]; a process that ran
while other processes used the CPU is marked disturbed. Its numbers are slower and wider than
the rest, so a report names the cell and what was seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agent.spec.printable import printable


@dataclass
class Busy:
    """Disturbed processes of one cell (summed over its records)."""
    disturbed: int = 0
    processes: int = 0
    others_cores: float = 0.0                   # the most other processes used before one
    names: list[str] = field(default_factory=list)   # the biggest of them, 'python3 (98%)'

    def add(self, record: dict) -> None:
        looks = [p for p in ((record.get("hygiene") or {}).get("processes") or []) if isinstance(p, dict)]
        self.processes += len(looks)
        for look in looks:
            if not look.get("disturbed"):
                continue
            self.disturbed += 1
            cores = look.get("others_cores")
            if isinstance(cores, (int, float)) and cores > self.others_cores:
                self.others_cores = float(cores)
                self.names = [f"{printable(p.get('name'))[:40]} ({p.get('cpu_pct')}%)" for p in (look.get("top") or [])
                              if isinstance(p, dict)][:3]

    def mark(self) -> str:
        """The short mark on a cell's status: '3/10 busy'; '' when none was disturbed."""
        return f"{self.disturbed}/{self.processes} busy" if self.disturbed else ""

    def note(self) -> str:
        """'3 of 10 processes ran on a busy machine (other processes used up to 0.94 cores: python3 (98%))'."""
        seen = f"other processes used up to {self.others_cores:.2f} cores"
        if self.names:
            seen += ": " + ", ".join(self.names)
        return f"{self.disturbed} of {self.processes} processes ran on a busy machine ({seen})"


def busy_of(records: list[dict]) -> Busy:
    busy = Busy()
    for record in records:
        busy.add(record)
    return busy


def headline(cells: list[Busy]) -> str:
    """One sentence for the top of a report when some cell ran on a busy machine ('' when none)."""
    hit = [b for b in cells if b.disturbed]
    if not hit:
        return ""
    cores = max(b.others_cores for b in hit)
    return (f"{len(hit)} cell(s) ran {sum(b.disturbed for b in hit)} of {sum(b.processes for b in hit)} processes "
            f"on a busy machine (other processes used up to {cores:.2f} cores), marked 'n/N busy' in the "
            f"status; such values are slower and wider than a quiet machine's.")
