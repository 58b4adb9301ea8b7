"""Everything one report shows, gathered once so every output format renders the same content."""

from __future__ import annotations

from dataclasses import dataclass

from deeppatch.reporting.cells import Table
from deeppatch.reporting.tables import Section

PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Plot:
    """A plot: its file name under plots/, a caption, and the PNG bytes."""

    name: str
    file: str
    caption: str
    png: bytes

    @property
    def relpath(self) -> str:
        return f"{PLOTS_DIR}/{self.file}"


@dataclass(frozen=True)
class Report:
    title: str
    header: tuple[tuple[str, str], ...]
    takeaways: tuple[str, ...]  # generated from the headline's numbers
    headline: Table | None
    leaderboard: Section | None
    switches: Section | None
    sections: tuple[Section, ...]
    plots: tuple[Plot, ...]
    files: tuple[tuple[str, str], ...]  # (relative path, what it holds) of the data files beside the report
