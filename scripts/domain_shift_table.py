"""The domain-shift table of scripts/run_profiles.sh: per cell line (or batch), the single-cell mAP of each
initialisation trained with that line seen and unseen, on the line's test images, and the drop.

    python scripts/domain_shift_table.py --data_dir DATA [--column batch] line0=shift_line0.json line1=...

Each JSON is ``evaluate.py --json`` over the line's test images with the submissions ``INIT_seen`` and
``INIT_unseen`` for every initialisation INIT. Prints a Markdown table with a mean row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.splits import read_metadata  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="the benchmark (its metadata.csv)")
    parser.add_argument(
        "--column", choices=["cell_line", "batch"], default="cell_line", help="the metadata column of the names"
    )
    parser.add_argument("results", nargs="+", metavar="LINE=JSON", help="evaluate.py JSON of each line's test images")
    return parser.parse_args(argv)


def shift_rows(
    results: dict[str, dict], metadata: pd.DataFrame, column: str = "cell_line"
) -> tuple[list[str], list[list]]:
    """(initialisations, rows): each row is the name (a value of ``column``), its train images, test images, then
    per initialisation seen, unseen and drop (seen - unseen); the last row is the mean over the names.

    Raises:
        ValueError: a JSON lacks an ``INIT_unseen`` for one of its ``INIT_seen`` submissions.
    """
    inits = sorted({name[: -len("_seen")] for report in results.values() for name in report if name.endswith("_seen")})
    rows = []
    for name, report in results.items():
        missing = [f"{init}_{kind}" for init in inits for kind in ("seen", "unseen") if f"{init}_{kind}" not in report]
        if missing:
            raise ValueError(f"{name}: no result for {missing}")
        counts = metadata[metadata[column] == name]["split"].value_counts()
        row = [name, int(counts.get("train", 0)), int(counts.get("test", 0))]
        for init in inits:
            seen, unseen = report[f"{init}_seen"]["mAP"], report[f"{init}_unseen"]["mAP"]
            row += [seen, unseen, seen - unseen]
        rows.append(row)
    mean = ["mean", "", ""] + [sum(row[k] for row in rows) / len(rows) for k in range(3, 3 + 3 * len(inits))]
    return inits, [*rows, mean]


def markdown(inits: list[str], rows: list[list], column: str = "cell_line") -> str:
    header = [column.replace("_", " "), "train images", "test images"]
    for init in inits:
        header += [f"{init} seen", f"{init} unseen", f"{init} drop"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(
            "| " + " | ".join(f"{round(v, 3) or 0.0:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    metadata = read_metadata(args.data_dir, "domain_shift_table.py")
    results = {}
    for item in args.results:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"domain_shift_table.py: {item!r} is not LINE=JSON of an existing file")
        results[name] = json.loads(Path(path).read_text())["results"]
    inits, rows = shift_rows(results, metadata, args.column)
    print(markdown(inits, rows, args.column))
    drops = {init: rows[-1][3 + 3 * k + 2] for k, init in enumerate(inits)}
    print("\nmean drop: " + ", ".join(f"{init} {drop:.3f}" for init, drop in drops.items()))
    print(f"smallest mean drop: {min(drops, key=drops.get)}")


if __name__ == "__main__":
    main(parse_args())
