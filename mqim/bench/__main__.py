"""`python -m mqim.bench --compare OLD.json NEW.json`: the change per figure between two saved runs.

(`mqim bench ... --json NEW.json` writes a run; `docs/bench/` keeps every full one.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqim.bench._compare import format_comparison, load_report
from mqim.bench._exceptions import BenchError


def main(argv: list[str] | None = None) -> int:
    """Print the comparison of NEW with OLD; 1 (and a message) when a file is not a report."""
    parser = argparse.ArgumentParser(prog="python -m mqim.bench", description=__doc__)
    parser.add_argument("--compare", metavar="OLD.json", type=Path, required=True, help="the earlier run")
    parser.add_argument("new", metavar="NEW.json", type=Path, help="the run to judge")
    args = parser.parse_args(argv)
    try:
        text = format_comparison(load_report(args.new), load_report(args.compare), old_name=str(args.compare))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
