"""A contact sheet of the built-in phantom: 8 benign and 8 malignant images of the default cohort
at the paper size (768x384), each titled with its finding, plus the quick size (128x64) beside
each, as a model sees them (issue 23).

    python benchmarks/phantom_contact_sheet.py --out docs/results/phantom-v6.png
"""
from __future__ import annotations

import argparse
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ssl_bench.data import synthetic_mammo as sm  # noqa: E402


def pick(table, label: int, n: int) -> list[int]:
    """``n`` images of one class, one breast's first view per finding in turn (every finding of
    the class shown before any repeats), in the cohort's order."""
    rows = table[(table["label"] == label)].drop_duplicates(["patient_id", "laterality"])
    by_finding = [rows.index[rows["finding"] == finding].tolist() for finding in rows["finding"].unique()]
    in_turn = [i for tier in itertools.zip_longest(*by_finding) for i in tier if i is not None]
    return in_turn[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="phantom.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", default="standard")
    args = parser.parse_args()
    table, paper = sm.generate_lazily(image_size=(768, 384), seed=args.seed, difficulty=args.difficulty)
    _, quick = sm.generate_lazily(image_size=(128, 64), seed=args.seed, difficulty=args.difficulty)
    fig, axes = plt.subplots(4, 8, figsize=(16, 16.5), gridspec_kw={"height_ratios": [2, 1, 2, 1]})
    for row, label in ((0, 0), (2, 1)):
        for column, i in enumerate(pick(table, label, 8)):
            for offset, render in ((0, paper), (1, quick)):
                ax = axes[row + offset, column]
                ax.imshow(render(i).astype(np.float32), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row, column].set_title(f"{'malignant' if label else 'benign'}\n{table.at[i, 'finding']}", fontsize=9)
        axes[row, 0].set_ylabel("768x384", fontsize=9)
        axes[row + 1, 0].set_ylabel("128x64", fontsize=9)
    fig.suptitle(f"Built-in phantom version {sm.VERSION} (seed {args.seed}, difficulty {args.difficulty})")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()
