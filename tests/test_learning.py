"""A learning test: a classifier trained for a few seconds on an easy synthetic setting localises its classes,
so per-cell scoring from its maps beats the image-probability floor. It fails when a change silently stops the
model from learning (loss, head, CAM seam, TTA loop or scoring)."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from src.cam.classifier_source import ClassifierSource
from src.cam.map_source import CheckpointSpec
from src.data.atomic import write_png_atomic
from src.data.classes import NUM_CLASSES
from src.metrics import evaluate_submission
from src.models.classifier import create_classifier
from src.models.losses import ClassificationLoss
from src.models.preprocess import normalize_images
from src.scoring.cell_scores import CellScoreConfig, cell_logit_scores, image_prob_scores
from src.submission.codec import cell_mask_predictions

SIZE = 64
QUADRANTS = [(slice(0, 32), slice(0, 32)), (slice(0, 32), slice(32, 64)), (slice(32, 64), slice(0, 32)),
             (slice(32, 64), slice(32, 64))]  # fmt: skip
CELL_MASK = np.zeros((SIZE, SIZE), np.uint16)
for _cell, (_rows, _cols) in enumerate(QUADRANTS, start=1):
    CELL_MASK[_rows, _cols][2:30, 2:30] = _cell


def _image(cell_classes: list[int], rng: np.random.Generator) -> np.ndarray:
    """(4, 64, 64) uint8 RGBY: four quadrant cells with a nucleus each; class 0 lights the nucleus in green,
    class 1 the cell's rim."""
    image = rng.integers(0, 20, (4, SIZE, SIZE)).astype(np.uint8)
    for (rows, cols), class_id in zip(QUADRANTS, cell_classes):
        cell = image[:, rows, cols]
        cell[0, 2:30, 2:30] = 80  # red: the cell body
        cell[2, 10:22, 10:22] = 200  # blue: the nucleus
        if class_id == 0:
            cell[1, 10:22, 10:22] = 220
        else:
            cell[1, 2:30, 2:30] = 220
            cell[1, 6:26, 6:26] = 10
    return image


def _dataset(count: int, rng: np.random.Generator, mixed: bool) -> tuple[np.ndarray, list[list[int]]]:
    """``count`` images; with ``mixed`` every image has two cells of each class, else the classes are random."""
    images, cells = [], []
    for _ in range(count):
        classes = rng.permutation([0, 0, 1, 1]).tolist() if mixed else rng.integers(0, 2, 4).tolist()
        images.append(_image(classes, rng))
        cells.append(classes)
    return np.stack(images), cells


def _train(images: np.ndarray, cells: list[list[int]], steps: int = 20) -> torch.nn.Module:
    torch.manual_seed(0)
    network = create_classifier("test_resnet", in_chans=4)
    targets = torch.zeros(len(images), NUM_CLASSES)
    for row, classes in enumerate(cells):
        targets[row, sorted(set(classes))] = 1.0
    inputs = normalize_images(torch.from_numpy(images))
    loss_fn = ClassificationLoss("bce")
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: steady on a shared machine
    try:
        for _ in range(steps):
            batch = torch.randint(0, len(images), (16,), generator=generator)
            loss = loss_fn(network(inputs[batch]), {"target": targets[batch]})["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return network.eval()


def _write_truth(root: Path, cells: list[list[int]]) -> tuple[Path, list[str]]:
    ids = [f"img{i}" for i in range(len(cells))]
    rows = []
    for image_id, classes in zip(ids, cells):
        write_png_atomic(root / "cell_masks" / f"{image_id}.png", CELL_MASK)
        rows += [(image_id, cell, str(class_id)) for cell, class_id in enumerate(classes, start=1)]
    pd.DataFrame(rows, columns=["ID", "cell_id", "Label"]).to_csv(root / "cell_labels.csv", index=False)
    return root, ids


def _submission(ids: list[str], scores: list[dict]) -> pd.DataFrame:
    rows = [(i, SIZE, SIZE, cell_mask_predictions(CELL_MASK, s)) for i, s in zip(ids, scores)]
    return pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"])


def test_a_few_seconds_of_training_make_cam_scoring_beat_the_image_probability_floor(tmp_path):
    rng = np.random.default_rng(0)
    train_images, train_cells = _dataset(64, rng, mixed=False)
    network = _train(train_images, train_cells)
    test_images, test_cells = _dataset(8, rng, mixed=True)

    source = ClassifierSource.__new__(ClassifierSource)
    source.network, source.device, source.in_chans = network, torch.device("cpu"), 4
    source.cam_method, source.gradcam_module, source.spec = "cam", None, CheckpointSpec("both", 1.0, "in-memory")
    probs, maps = source.predict(torch.from_numpy(test_images), (SIZE, SIZE), True, [1.0], map_kind="logit")
    assert (probs[:, [0, 1]] > 0.5).all(), "the classifier did not learn the image labels"

    green = np.full((SIZE, SIZE), 50, np.uint8)
    logit_config = CellScoreConfig(conf_how="cell_logit")
    cam = [cell_logit_scores(p.numpy(), m.numpy(), CELL_MASK, green, logit_config) for p, m in zip(probs, maps)]
    floor = [image_prob_scores(p.numpy(), CELL_MASK, green, CellScoreConfig(conf_how="image_prob")) for p in probs]
    truth, ids = _write_truth(tmp_path / "truth", test_cells)
    cam_map = evaluate_submission(_submission(ids, cam), truth).mAP
    floor_map = evaluate_submission(_submission(ids, floor), truth).mAP
    assert cam_map > floor_map + 0.15, f"CAM scoring {cam_map:.3f} vs image-probability floor {floor_map:.3f}"
