"""README pictures of a finished pipeline run: per-class AP bars, per-cell predictions, CAMs per class.

    python scripts/plot_results.py --out_dir outputs/synthetic --data_dir data/synthetic
    python scripts/plot_results.py --out_dir outputs/gpu_scale --only_ap --ap_name per_class_ap_gpu.png

Reads ``{out_dir}/evaluation.json`` (evaluate.py), ``{out_dir}/submission.csv`` and the round-1
checkpoint; writes ``images/per_class_ap.png``, ``images/cell_predictions.png`` and
``images/cam_overlays.png`` (the two test images with the most classes, plus a real HPA sample from
``../shared/data/hpa_kaggle_samples`` when that folder exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cam.map_source import CheckpointSpec  # noqa: E402
from src.cam.sources import load_sources  # noqa: E402
from src.data.atomic import atomic_path  # noqa: E402
from src.data.classes import CLASS_NAMES, NEGATIVE  # noqa: E402
from src.data.io import read_rgby, resize_image  # noqa: E402
from src.metrics.truth import read_cell_labels  # noqa: E402
from src.submission.codec import decode_binary_mask, parse_prediction_string, read_submission  # noqa: E402
from src.viz.render import rgby_to_display  # noqa: E402

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "hpa_kaggle_samples"
REAL_ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"


def save(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
    plt.close(figure)
    print(f"wrote {path}")


def plot_per_class_ap(evaluation: dict, path: Path) -> None:
    """Grouped bars: one group per class, one bar per submission (and the image-label floor)."""
    results = evaluation["results"]
    names = list(results)
    classes = sorted({int(c) for r in results.values() for c in r["per_class"]})
    figure, axis = plt.subplots(figsize=(16, 5.5), dpi=100)
    width = 0.8 / len(names)
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        per_class = results[name]["per_class"]
        values = [per_class.get(str(c), {}).get("ap") or 0.0 for c in classes]
        label = f"{name} (mAP {results[name]['mAP']:.3f})"
        axis.bar(
            np.arange(len(classes)) + (i - (len(names) - 1) / 2) * width, values, width, label=label, color=colours(i)
        )
    axis.set_xticks(np.arange(len(classes)))
    axis.set_xticklabels([f"{c} {CLASS_NAMES[c]}" for c in classes], rotation=40, ha="right", fontsize=9)
    axis.set_ylabel("single-cell AP (IoU 0.6)")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=9, ncol=(len(names) + 1) // 2, loc="lower center", bbox_to_anchor=(0.5, 1.01), frameon=False)
    axis.set_title(
        f"Per-class single-cell AP on the synthetic benchmark's {evaluation['num_images']} test images", pad=44
    )
    figure.tight_layout()
    save(figure, path)


def plot_cell_predictions(
    data_dir: Path, submission: Path, truth_dir: Path, cell_labels: dict, path: Path, image_id: str | None
) -> None:
    """One test image with each cell's top predicted class, next to its true classes."""
    frame = read_submission(submission)
    if image_id is None:  # the test image with the most cells, for a busy picture
        image_id = min(frame["ID"], key=lambda i: (-len(cell_labels.get(i, {})), i))
    row = frame.loc[frame["ID"] == image_id].iloc[0]
    rgby = read_rgby(data_dir, image_id, "test")
    rgb = rgby_to_display(rgby)
    height, width = rgby.shape[:2]
    cells: dict[str, tuple[np.ndarray, list[tuple[int, float]]]] = {}
    for prediction in parse_prediction_string(row.PredictionString, where=image_id):
        mask, scores = cells.setdefault(prediction.rle, (decode_binary_mask(prediction.rle, height, width), []))
        scores.append((prediction.class_id, prediction.confidence))
    truth_mask = cv2.imread(str(truth_dir / "cell_masks" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
    figure, axes = plt.subplots(1, 2, figsize=(16, 8.6), dpi=100)
    for axis, title in zip(
        axes, ("predicted: top class and confidence per segmented cell", "truth: classes of each cell")
    ):
        axis.imshow(rgb)
        axis.set_title(title, fontsize=12)
        axis.axis("off")
    for mask, scores in cells.values():
        outline = find_boundaries(mask, mode="inner")
        axes[0].contour(outline, levels=[0.5], colors="white", linewidths=0.6)
        top_class, confidence = max(scores, key=lambda s: s[1])
        ys, xs = np.nonzero(mask)
        axes[0].text(
            xs.mean(), ys.mean(), f"{top_class}\n{confidence:.2f}", color="yellow", fontsize=8, ha="center", va="center"
        )
    for cell_id, classes in cell_labels.get(image_id, {}).items():
        mask = truth_mask == cell_id
        if not mask.any():
            continue
        axes[1].contour(find_boundaries(mask, mode="inner"), levels=[0.5], colors="white", linewidths=0.6)
        ys, xs = np.nonzero(mask)
        text = ",".join(map(str, classes))
        axes[1].text(xs.mean(), ys.mean(), text, color="yellow", fontsize=8, ha="center", va="center")
    figure.suptitle(f"{image_id}: per-cell predictions of {submission.name} (class ids as in the README)", fontsize=13)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.02)
    save(figure, path)


def class_maps(source, rgby: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(19,) image probabilities and (19, H, W) per-class-normalised CAMs of one image, flip TTA."""
    image = torch.from_numpy(resize_image(rgby, source.input_size)).permute(2, 0, 1)[None]
    probs, cams = source.predict(image, rgby.shape[:2], flips=True, scales=[1.0])
    return probs[0].numpy(), cams[0].numpy()


def plot_cam_overlays(
    checkpoint: Path, images: list[tuple[str, list[int], np.ndarray]], path: Path, per_image: int = 4
) -> None:
    """Rows: images; columns: the image, then the CAMs of its true classes and of its most probable ones."""
    source = load_sources([CheckpointSpec("both", 1.0, str(checkpoint))], torch.device("cpu"))[0]
    figure, axes = plt.subplots(len(images), per_image + 1, figsize=(3.4 * (per_image + 1), 3.6 * len(images)), dpi=100)
    axes = np.atleast_2d(axes)
    for row, (title, true_classes, rgby) in enumerate(images):
        small = cv2.resize(rgby, (512, 512), interpolation=cv2.INTER_AREA)
        probs, cams = class_maps(source, small)
        rgb = rgby_to_display(small)
        axes[row, 0].imshow(rgb)
        axes[row, 0].set_title(title, fontsize=9)
        ranked = [c for c in true_classes if c != NEGATIVE]
        ranked += [c for c in np.argsort(-probs) if c != NEGATIVE and c not in ranked]
        ranked = ranked[:per_image]
        for col, class_id in enumerate(ranked, start=1):
            axes[row, col].imshow((rgb * 0.55).astype(np.uint8))
            axes[row, col].imshow(cams[class_id], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            truth = "true" if class_id in true_classes else "not true"
            axes[row, col].set_title(
                f"CAM {class_id} {CLASS_NAMES[class_id]}\np = {probs[class_id]:.2f} ({truth})", fontsize=9
            )
        for axis in axes[row]:
            axis.axis("off")
    run = checkpoint.parents[3].name  # {run}/lightning_logs/version_N/checkpoints/last.ckpt
    figure.suptitle(
        f"Class activation maps of {run}/{checkpoint.name} (trained on the synthetic benchmark)", fontsize=12
    )
    figure.tight_layout()
    save(figure, path)


def main(args: argparse.Namespace) -> None:
    evaluation = json.loads((args.out_dir / "evaluation.json").read_text())
    plot_per_class_ap(evaluation, args.images_dir / args.ap_name)
    if args.only_ap:
        return
    truth_dir = args.data_dir / "truth"
    cell_labels = read_cell_labels(truth_dir / "cell_labels.csv")
    plot_cell_predictions(
        args.data_dir,
        args.out_dir / "submission.csv",
        truth_dir,
        cell_labels,
        args.images_dir / "cell_predictions.png",
        args.image_id,
    )
    checkpoints = (args.out_dir / "round1" / "lightning_logs").glob("version_*/checkpoints/last.ckpt")
    checkpoint = max(checkpoints, key=lambda p: int(p.parents[1].name.split("_")[1]))  # the newest run
    test_ids = read_submission(args.data_dir / "sample_submission.csv")["ID"].tolist()
    labels = {
        image_id: sorted({c for classes in cell_labels.get(image_id, {}).values() for c in classes})
        for image_id in test_ids
    }
    shown = []
    for image_id in sorted(labels, key=lambda i: (-len(labels[i]), i))[:2]:  # the most varied test images
        title = f"synthetic {image_id}\ntrue: {', '.join(map(str, labels[image_id]))}"
        shown.append((title, labels[image_id], read_rgby(args.data_dir, image_id, "test")))
    if REAL_DIR.is_dir():
        shown.append((f"REAL HPA {REAL_ID[:8]}\ntrue: 0, 1, 2, 7", [0, 1, 2, 7], read_rgby(REAL_DIR, REAL_ID, "")))
    else:
        print(f"no real samples in {REAL_DIR}: CAMs of synthetic images only")
    plot_cam_overlays(checkpoint, shown, args.images_dir / "cam_overlays.png")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=Path, default=Path("outputs/synthetic"), help="OUT_DIR of run_pipeline.sh")
    parser.add_argument("--data_dir", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--images_dir", type=Path, default=Path("images"))
    parser.add_argument("--image_id", default=None, help="test image of the predictions picture (default: most cells)")
    parser.add_argument("--ap_name", default="per_class_ap.png", help="file name of the per-class AP picture")
    parser.add_argument(
        "--only_ap", action="store_true", help="draw the per-class AP picture only (any evaluation.json)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
