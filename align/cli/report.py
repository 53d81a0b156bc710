"""Rebuild the report of a run of rounds from its evaluations: `report.md`, the self-contained `report.html`
(tables, plots, example answers per round side by side) and `progress.png` (docs/reports.md).

    align report runs/demo
    align report --run_dir runs/demo

`align round N` writes the same files at its end; this command rebuilds them (after a report change, or
from a copied run folder). It reads `runs/<name>/round-*/evaluate/` and `manifest.json` and trains nothing.
"""

import sys
from dataclasses import dataclass, field

from ..config import exit_with_error, parse_config


@dataclass
class ReportConfig:
    run_dir: str = field(metadata={"help": "the run folder, runs/<name> (holds round-N/ and manifest.json)"})


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv[:1] = ["--run_dir", argv[0]]  # `align report runs/demo`
    config = parse_config(ReportConfig, argv, prog, description=__doc__)
    from ..reports.rounds import write_report  # matplotlib and torch: after the options are known to be right

    try:
        written = write_report(config.run_dir)
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error), prog)
    print(f"report: {written} and {written.with_suffix('.html')}")


if __name__ == "__main__":
    main()
