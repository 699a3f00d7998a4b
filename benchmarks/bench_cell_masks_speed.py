"""Speed of the mask backends on real 2048x2048 HPA images, decode included.

    OMP_NUM_THREADS=1 python benchmarks/bench_cell_masks_speed.py --repeats 4
    OMP_NUM_THREADS=1 python benchmarks/bench_cell_masks_speed.py --backend learned --repeats 4
    python benchmarks/bench_cell_masks_speed.py --backend hpacellseg --repeats 1

classical: seconds per image on one core (OpenCV and BLAS limited to one thread) for decode,
segmentation and cache write, then the throughput of 1 and 2 worker processes over the
same tasks.

learned: the same figures for the learned backend (--weights, default outputs/cell_segmenter/weights.pt),
torch limited to one thread per process.

hpacellseg: seconds per image at scale 0.25 on --device (torch's default threads on the CPU)
for the nuclei network, the cell network and hpacellseg's labelling. The package comes from
the source archives in --vendor_dir (extracted into a temporary folder) and the networks are
DPN-UNets of the published architecture with random weights, pickled as the published files
are: the speed is that of the real networks, the masks are meaningless.

Other processes on the machine distort the figures: run it when it is quiet.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_cell_masks_quality import learned_overrides  # noqa: E402

from src.cell_masks.cache import write_masks  # noqa: E402
from src.cell_masks.classical import segment_classical  # noqa: E402
from src.cell_masks.hpacellseg_backend import HpaCellSegSegmenter, add_import_roots, build_dpn_unet  # noqa: E402
from src.cell_masks.learned_net import DEFAULT_WEIGHTS  # noqa: E402
from src.cell_masks.segment import get_segmenter  # noqa: E402
from src.data.io import read_labels, read_rgby  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hpa_dir", type=Path, default=Path("../shared/data/hpa_kaggle_samples"))
    parser.add_argument("--repeats", type=int, default=4, help="passes over the 3 images")
    parser.add_argument("--max_workers", type=int, default=2, help="classical: largest worker count timed")
    parser.add_argument("--backend", default="classical", choices=("classical", "learned", "hpacellseg"))
    parser.add_argument("--weights", type=Path, default=ROOT / DEFAULT_WEIGHTS, help="learned: weight file")
    parser.add_argument(
        "--learned_params", default="{}", help="learned: LearnedParams overrides, YAML mapping or file (tta_scales...)"
    )
    parser.add_argument(
        "--vendor_dir", type=Path, default=Path("../shared/vendor"), help="hpacellseg: folder of the two archives"
    )
    parser.add_argument("--device", default="cpu", help="hpacellseg: torch device")
    return parser.parse_args()


_SEGMENTERS: dict[tuple[str, str, str], Callable] = {}


def segmenter_for(backend: str, weights: str, learned_params: str = "{}") -> Callable:
    """The segmenter of ``backend`` (classical or learned), built once per process, single-threaded."""
    key = (backend, weights, learned_params)
    if key not in _SEGMENTERS:
        cv2.setNumThreads(1)
        if backend == "learned":
            import torch

            torch.set_num_threads(1)
            _SEGMENTERS[key] = get_segmenter("learned", weights=weights, **learned_overrides(learned_params))
        else:
            _SEGMENTERS[key] = segment_classical
    return _SEGMENTERS[key]


def one_image(hpa_dir: str, image_id: str, backend: str = "classical", weights: str = "", learned: str = "{}") -> float:
    """Decode and segment one image in a single thread; returns seconds."""
    segment = segmenter_for(backend, weights, learned)
    start = time.perf_counter()
    segment(read_rgby(hpa_dir, image_id, split=""))
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> None:
    if not (args.hpa_dir / "train.csv").is_file():
        raise SystemExit(f"HPA samples not found in {args.hpa_dir}")
    hpa_ids = read_labels(args.hpa_dir / "train.csv")["ID"].tolist()
    if args.backend == "hpacellseg":
        bench_hpacellseg(args, hpa_ids)
    else:
        if args.backend == "learned" and not args.weights.is_file():
            raise SystemExit(f"--weights {args.weights}: no such file (train_cell_segmenter.py writes it)")
        bench_classical(args, hpa_ids)


def bench_classical(args: argparse.Namespace, hpa_ids: list[str]) -> None:
    """Classical or learned backend: one core, then 1..max_workers processes."""
    backend, weights, learned = args.backend, str(args.weights), args.learned_params
    segmenter = segmenter_for(backend, weights, learned)
    one_image(str(args.hpa_dir), hpa_ids[0], backend, weights, learned)  # warm-up (imports, caches)
    decode, segment, write = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for image_id in hpa_ids:
                t0 = time.perf_counter()
                rgby = read_rgby(args.hpa_dir, image_id, split="")
                t1 = time.perf_counter()
                nuclei_mask, cell_mask = segmenter(rgby)
                t2 = time.perf_counter()
                write_masks(Path(tmp) / f"{image_id}.npz", nuclei_mask, cell_mask)
                t3 = time.perf_counter()
                decode.append(t1 - t0)
                segment.append(t2 - t1)
                write.append(t3 - t2)
    n = len(decode)
    print(
        f"{backend}, one core, {n} images of 2048x2048 (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}):"
    )
    print(
        f"  decode {sum(decode) / n:.3f} s + segment {sum(segment) / n:.3f} s = {(sum(decode) + sum(segment)) / n:.3f} s/image"
    )
    print(f"  cache write (npz, compressed) {sum(write) / n:.3f} s/image")
    tasks = [image_id for _ in range(args.repeats) for image_id in hpa_ids]
    throughput = {}
    for workers in range(1, args.max_workers + 1):
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            warm = [[str(args.hpa_dir)] * workers, hpa_ids[:1] * workers, [backend] * workers, [weights] * workers,
                    [learned] * workers]  # fmt: skip
            list(pool.map(one_image, *warm))  # start and warm workers
            start = time.perf_counter()
            list(pool.map(one_image, [str(args.hpa_dir)] * len(tasks), tasks, [backend] * len(tasks),
                          [weights] * len(tasks), [learned] * len(tasks)))  # fmt: skip
            elapsed = time.perf_counter() - start
        throughput[workers] = len(tasks) / elapsed
        print(f"  {workers} worker(s): {throughput[workers]:.2f} images/s ({elapsed:.1f} s for {len(tasks)} images)")
    if len(throughput) > 1:
        print(f"  speed-up {args.max_workers} vs 1 worker: {throughput[args.max_workers] / throughput[1]:.2f}x")


def timed(function: Callable, seconds: list[float]) -> Callable:
    """``function`` that appends its run time to ``seconds``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return result

    return wrapper


def bench_hpacellseg(args: argparse.Namespace, hpa_ids: list[str]) -> None:
    import torch

    archives = [*sorted(args.vendor_dir.glob("hpacellseg-*.tar.gz")), *sorted(args.vendor_dir.glob("pytorch_zoo-*"))]
    if len(archives) != 2:
        raise SystemExit(f"{args.vendor_dir}: expected hpacellseg-*.tar.gz and pytorch_zoo-*.tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        add_import_roots(archives, Path(tmp) / "vendor")
        weights = []
        for seed, name in enumerate(("nuclei_model.pth", "cell_model.pth")):
            torch.manual_seed(seed)
            weights.append(Path(tmp) / name)
            torch.save(torch.nn.DataParallel(build_dpn_unet()), weights[-1])
        segmenter = HpaCellSegSegmenter(*weights, device=args.device, scale_factor=0.25)
        start = time.perf_counter()
        segmenter(read_rgby(args.hpa_dir, hpa_ids[0], split=""), hpa_ids[0])  # loads both networks, warms up
        warm_up = time.perf_counter() - start
        stages: dict[str, list[float]] = defaultdict(list)
        network = segmenter._segmentator  # the benchmark times the package's own steps
        network.pred_nuclei = timed(network.pred_nuclei, stages["nuclei network"])
        network.pred_cells = timed(network.pred_cells, stages["cell network"])
        segmenter._label_cell = timed(segmenter._label_cell, stages["label_cell"])
        for _ in range(args.repeats):
            for image_id in hpa_ids:
                start = time.perf_counter()
                rgby = read_rgby(args.hpa_dir, image_id, split="")
                stages["decode"].append(time.perf_counter() - start)
                start = time.perf_counter()
                segmenter(rgby, image_id)
                stages["segment"].append(time.perf_counter() - start)
    n = len(stages["segment"])
    print(
        f"hpacellseg, scale 0.25, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"{n} images of 2048x2048 (first call with loading and warm-up: {warm_up:.1f} s):"
    )
    for stage in ("nuclei network", "cell network", "label_cell", "segment", "decode"):
        print(f"  {stage}: {sum(stages[stage]) / n:.2f} s/image")
    print(f"  decode + segment: {(sum(stages['decode']) + sum(stages['segment'])) / n:.2f} s/image")


if __name__ == "__main__":
    main(parse_args())
