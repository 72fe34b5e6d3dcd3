"""`python -m segdistill.report.show summary.md`: print the summary after `make run`, verdicts last as well,
so the answer is the last thing on the screen."""

import sys
from pathlib import Path

if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "results/report/summary.md")
    if not path.is_file():
        sys.exit(f"no summary at {path}: did the workflow finish?")
    text = path.read_text()
    print(text)
    head = text.split("\n# ", 1)[0].strip()  # the verdicts (and a bias warning) come before the first title
    print("Verdicts:\n" + head)
