"""A class of N submissions for timing the grader: copies of the six samples of notebook 00.

    python grading/samples/make_class.py class30/ --copies 5     # 30 submissions
    python -m course_lib.teaching.grading class30/ --out results30 --hidden grading/hidden --jobs 2 \\
        --cell-timeout 60 --exercise-timeout 10

Copy ``k`` of ``sample.ipynb`` is ``sample-k.ipynb`` with a comment ``# copy k`` added to each exercise cell (so
no two submissions are byte-identical); the broken-JSON sample is copied as it is. The timing of a class of 30
is in INSTRUCTORS.md ("How long a class takes").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

SAMPLES = Path(__file__).resolve().parent / "nb00"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder to create (must not exist)")
    p.add_argument("--copies", type=int, default=5, help="copies of each sample (default 5: 30 submissions)")
    args = p.parse_args()
    args.out.mkdir(parents=True)
    for sample in sorted(SAMPLES.glob("*.ipynb")):
        for k in range(args.copies):
            target = args.out / f"{sample.stem}-{k}.ipynb"
            try:
                nb = nbformat.read(sample, as_version=4)
            except Exception:  # noqa: BLE001 - the broken-JSON sample stays broken
                target.write_bytes(sample.read_bytes())
                continue
            for cell in nb.cells:
                if cell.get("metadata", {}).get("exercise"):
                    cell.source = f"# copy {k}\n" + cell.source
            nbformat.write(nb, target)
    print(f"wrote {len(list(args.out.glob('*.ipynb')))} submissions to {args.out}")


if __name__ == "__main__":
    main()
