"""Picture for the README: synthetic HPA-like images beside real HPA images, rendered the same way.

    python scripts/plot_synthetic_vs_real.py --out images/synthetic_vs_real.png

Real images are read from ../shared/data/hpa_kaggle_samples/ (resized to --size); when that
folder is missing the real panels are skipped with a message and only synthetic ones are drawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.atomic import atomic_path  # noqa: E402
from src.data.classes import CLASS_NAMES  # noqa: E402
from src.data.io import read_labels, read_rgby  # noqa: E402
from src.synthetic import SyntheticConfig, generate_image  # noqa: E402
from src.viz.render import rgby_to_rgb  # noqa: E402

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "hpa_kaggle_samples"
REAL_IDS = ("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0", "b6a469d8-bbad-11e8-b2ba-ac1f6b6435d0")
# Drawn labels of the synthetic examples: the first two mirror the real images' labels.
SYNTHETIC_LABELS = ((0, 1, 2, 7), (11, 16), (14,), (9, 13), (4, 12), (6, 17))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("images/synthetic_vs_real.png"))
    parser.add_argument("--real_dir", type=Path, default=REAL_DIR, help="folder with real {ID}_{color}.png files")
    parser.add_argument("--size", type=int, default=512, help="side of every panel's image in px")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dpi", type=int, default=150)
    return parser.parse_args()


def title_for(labels: list[int], prefix: str) -> str:
    names = [CLASS_NAMES[c] for c in labels]
    lines, line = [], prefix
    for name in names:
        candidate = f"{line}, {name}" if line != prefix else f"{line}: {name}"
        if len(candidate) > 38 and line != prefix:
            lines.append(line + ",")
            line = name
        else:
            line = candidate
    return "\n".join([*lines, line])


def real_panels(real_dir: Path, size: int) -> list[tuple[np.ndarray, str]]:
    if not real_dir.is_dir():
        print(f"real HPA samples not found at {real_dir}: drawing synthetic panels only")
        return []
    labels = read_labels(real_dir / "train.csv").set_index("ID")["labels"] if (real_dir / "train.csv").is_file() else {}
    panels = []
    for image_id in REAL_IDS:
        rgby = read_rgby(real_dir, image_id, split="", size=size)
        panels.append((rgby, title_for(sorted(labels.get(image_id, [])), f"REAL {image_id[:8]}")))
    return panels


def main(args: argparse.Namespace) -> None:
    config = SyntheticConfig()
    synthetic = []
    for offset, labels in enumerate(SYNTHETIC_LABELS):
        image = generate_image(args.seed * 1000 + offset, args.size, config, image_labels=list(labels))
        synthetic.append((image.rgby, title_for(image.image_labels, "synthetic")))
    real = real_panels(args.real_dir, args.size)
    panels = [real[0], synthetic[0], real[1], synthetic[1], *synthetic[2:]] if len(real) == 2 else synthetic
    columns = 4
    rows = int(np.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 3.4 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (rgby, title) in zip(np.ravel(axes), panels, strict=False):
        ax.imshow(rgby_to_rgb(rgby), interpolation="antialiased")
        ax.set_title(title, fontsize=7, color="darkred" if title.startswith("REAL") else "black")
    fig.suptitle(
        "Synthetic HPA-like benchmark vs real HPA images (red microtubules, green protein, blue nucleus, yellow ER)",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(parse_args())
