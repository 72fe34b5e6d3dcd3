"""`python -m segdistill.report.show summary.md`: print the summary after `make run`."""

import sys
from pathlib import Path

if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "results/report/summary.md")
    if not path.is_file():
        sys.exit(f"no summary at {path}: did the workflow finish?")
    print(path.read_text())
