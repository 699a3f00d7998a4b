import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

import run_classification
from src.data.io import read_rgby, resize_image
from src.models.factory import build_criterion, build_network
from src.training.checkpoints import load_trained_pl_model
from src.training.datamodule import HPADataModule, cache_file, read_cached_image
from src.training.lit_model import LitModel, macro_average_precision, parameter_groups, warmup_cosine
from src.training.trainer import build_trainer, check_shared_args, resolve_trainer_args

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (0, 2, 7, 14)


def write_kaggle_data(root: Path, num_images: int = 20, size: int = 64) -> Path:
    """Kaggle layout with class-dependent green bands: class CLASSES[k] lights the k-th horizontal quarter."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    rows = []
    for index in range(num_images):
        labels = sorted(rng.choice(CLASSES, size=rng.integers(1, 3), replace=False).tolist())
        image = rng.integers(0, 30, (4, size, size)).astype(np.uint8)
        for class_id in labels:
            quarter = CLASSES.index(class_id)
            image[1, quarter * size // 4 : (quarter + 1) * size // 4] += 150
        for channel, name in enumerate(("red", "green", "blue", "yellow")):
            cv2.imwrite(str(root / "train" / f"img{index:03d}_{name}.png"), image[channel])
        rows.append(f"img{index:03d},{'|'.join(map(str, labels))}")
    (root / "train.csv").write_text("ID,Label\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def kaggle_data(tmp_path_factory) -> Path:
    return write_kaggle_data(tmp_path_factory.mktemp("hpa") / "data")


def train_args(data_dir: Path, root_dir: Path, *extra: str) -> list[str]:
    return [
        "--data_dir", str(data_dir), "--timm_model_name", "test_resnet", "--input_size", "64", "--batch_size", "4",
        "--num_workers", "0", "--max_epochs", "1", "--accelerator", "cpu", "--lr", "0.05",
        "--log_every_n_steps", "1", "--default_root_dir", str(root_dir), *extra,
    ]  # fmt: skip


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def round0_run(kaggle_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("round0")
    run_script("run_classification.py", *train_args(kaggle_data, root, "--precision", "16"))
    return root / "lightning_logs" / "version_0"


def test_round0_writes_best_and_last_checkpoints_and_hparams(round0_run):
    names = sorted(p.name for p in (round0_run / "checkpoints").iterdir())
    assert names == ["epoch-0-step-4.ckpt", "last.ckpt"]
    hparams = yaml.safe_load((round0_run / "hparams.yaml").read_text())
    assert hparams["timm_model_name"] == "test_resnet" and hparams["round_nb"] == 0
    assert hparams["precision"] == "32-true"  # 16-mixed asked for on CPU falls back to 32 with a warning


def test_hparams_and_final_val_metrics_reach_tensorboard(round0_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(next(round0_run.glob("events.out.tfevents.*"))))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {m.name.tag for m in experiment.metric_infos} == {"val/mAP", "val/F1", "val/loss"}
    assert session.hparams["timm_model_name"].string_value == "test_resnet"
    assert session.hparams["lr"].number_value == pytest.approx(0.05)
    final_map = events.Scalars("val/mAP")[-1]
    assert final_map.step > 0 and 0.0 < final_map.value <= 1.0
    assert {"train/loss", "val/loss", "val/F1"} <= set(events.Tags()["scalars"])


def test_load_trained_pl_model_round_trip(round0_run):
    checkpoint_path = round0_run / "checkpoints" / "last.ckpt"
    model, hparams = load_trained_pl_model(LitModel, checkpoint_path)
    assert hparams["timm_model_name"] == "test_resnet" and not model.training
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    none_model, yaml_hparams = load_trained_pl_model(LitModel, checkpoint_path, only_load_yaml=True)
    assert none_model is None and yaml_hparams["input_size"] == 64


def test_sccam_chain_round0_to_round1_through_scripts(round0_run, kaggle_data, tmp_path):
    checkpoint = str(round0_run / "checkpoints" / "last.ckpt")
    save_folder = tmp_path / "save_uni"
    run_script("extract_feature.py", "--weights", checkpoint, "--save_folder", str(save_folder), "--num_workers", "0")
    features = np.load(save_folder / "feature" / "R0_feature.npy")
    assert features.shape[0] == 20 and np.isfinite(features).all()
    run_script(
        "create_pseudo_label.py",
        "--save_folder",
        str(save_folder),
        "--for_round_nb",
        "1",
        "--k_cluster",
        "3",
        "--is_scale_feature",
    )
    assert (save_folder / "label" / "R1_sub_label.csv").is_file()
    root = tmp_path / "round1"
    run_script(
        "run_classification.py",
        *train_args(
            kaggle_data, root, "--round_nb", "1", "--sub_label_dir", str(save_folder), "--ckpt_path", checkpoint
        ),
    )
    model, hparams = load_trained_pl_model(
        LitModel, root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    )
    assert hparams["round_nb"] == 1 and hparams["k_cluster"] == 3
    assert model.network.sub_classifier.weight.shape[0] == 19 * 3


def test_checkpoint_with_other_input_channels_fails_before_training(round0_run, kaggle_data, tmp_path):
    args = run_classification.parse_args(
        train_args(
            kaggle_data, tmp_path, "--num_inchannels", "3", "--ckpt_path", str(round0_run / "checkpoints" / "last.ckpt")
        )
    )
    with pytest.raises(ValueError, match="num_inchannels=4 but this run asks for 3"):
        run_classification.main(args)
    assert not (tmp_path / "lightning_logs").exists()


def test_data_dir_without_train_csv_fails_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no train.csv"):
        run_classification.main(run_classification.parse_args(train_args(tmp_path, tmp_path)))


def test_round1_without_sub_labels_for_every_image_fails(kaggle_data, tmp_path):
    label_dir = tmp_path / "save" / "label"
    label_dir.mkdir(parents=True)
    (label_dir / "R1_sub_label.csv").write_text("ID,sub_labels\nimg000,0\n")
    (label_dir / "R1_sub_label.yaml").write_text("k_cluster: 2\n")
    args = run_classification.parse_args(
        train_args(kaggle_data, tmp_path, "--round_nb", "1", "--sub_label_dir", str(tmp_path / "save"))
    )
    with pytest.raises(ValueError, match="lacks 19 of 20 images"):
        run_classification.main(args)


def test_precision_16_maps_to_mixed_and_falls_back_on_cpu(kaggle_data, tmp_path):
    args = run_classification.parse_args(train_args(kaggle_data, tmp_path, "--precision", "16"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_trainer_args(args)
    assert args.precision == "32-true" and any("needs a GPU" in str(w.message) for w in caught)


def test_image_cache_is_built_once_and_matches_the_resized_original(kaggle_data, tmp_path):
    datamodule = HPADataModule(kaggle_data, input_size=32, cache_dir=tmp_path / "cache", batch_size=4, num_workers=0)
    datamodule.prepare_data()
    cached = cache_file(tmp_path / "cache", "train", "img003")
    first_write = cached.stat().st_mtime_ns
    datamodule.prepare_data()
    assert cached.stat().st_mtime_ns == first_write
    assert cached.suffix == ".npy" and len(list((tmp_path / "cache" / "train").glob("*.npy"))) == 20
    np.testing.assert_array_equal(np.load(cached), resize_image(read_rgby(kaggle_data, "img003"), 32))


@pytest.mark.parametrize("cache_format", ["npy", "png"])
def test_a_corrupt_cache_file_is_named_with_the_fix(tmp_path, cache_format):
    path = tmp_path / f"img.{cache_format}"
    path.write_bytes(b"half a file")
    with pytest.raises(ValueError, match=rf"corrupt cache file .*img\.{cache_format}: delete it to rebuild"):
        read_cached_image(path)


def test_png_and_npy_caches_give_the_same_augmented_batches(kaggle_data, tmp_path):
    batches = {}
    for cache_format in ("png", "npy", "png"):
        datamodule = HPADataModule(
            kaggle_data, input_size=32, cache_size=48, cache_dir=tmp_path / cache_format, cache_format=cache_format,
            batch_size=8, num_workers=0, aug_mode=1,
        )  # fmt: skip
        datamodule.prepare_data()
        datamodule.setup("fit")
        pl.seed_everything(5, verbose=False)  # augmentations and order follow the run's seed
        batches.setdefault(cache_format, []).append(next(iter(datamodule.train_dataloader())))
    assert len(list((tmp_path / "npy" / "train").glob("*.npy"))) == 20
    png_first, png_again = batches["png"]
    torch.testing.assert_close(png_first["image"], png_again["image"])  # the seed fixes the augmentation
    torch.testing.assert_close(batches["npy"][0]["image"], png_first["image"])
    assert batches["npy"][0]["id"] == png_first["id"]


def test_loader_workers_draw_their_own_augmentations_and_follow_the_seed(kaggle_data, tmp_path):
    datamodule = HPADataModule(kaggle_data, input_size=32, cache_dir=tmp_path / "cache", num_workers=0, aug_mode=2)
    datamodule.prepare_data()
    same_image = datamodule.make_dataset(np.zeros(8, dtype=int), train=True)  # one image, 8 times

    def two_batches(seed: int) -> list[torch.Tensor]:
        pl.seed_everything(seed, verbose=False)
        loader = torch.utils.data.DataLoader(same_image, batch_size=4, num_workers=2)  # worker w makes batch w
        return [batch["image"] for batch in loader]

    first, second = two_batches(5)
    assert not torch.equal(first, second)  # a worker repeating the other's stream would flip and turn alike
    for again, before in zip(two_batches(5), (first, second), strict=True):
        torch.testing.assert_close(again, before)
    assert not torch.equal(torch.cat(two_batches(6)), torch.cat([first, second]))


def test_batches_are_uint8_images_with_multihot_targets_and_disjoint_folds(kaggle_data, tmp_path):
    datamodule = HPADataModule(
        kaggle_data, input_size=32, cache_dir=tmp_path / "cache", batch_size=4, num_workers=0, in_chans=3
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 32, 32)
    assert batch["target"].shape == (4, 19) and set(batch["target"].sum(dim=0).nonzero().flatten().tolist()) <= set(
        CLASSES
    )
    train_ids = {datamodule.train_set[i]["id"] for i in range(len(datamodule.train_set))}
    val_ids = {datamodule.val_set[i]["id"] for i in range(len(datamodule.val_set))}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 20


def test_mask_target_is_augmented_together_with_the_image_and_stays_uint8(kaggle_data, tmp_path):
    def green_band_mask(image_id: str, shape: tuple[int, int]) -> np.ndarray:
        green = resize_image(read_rgby(kaggle_data, image_id), shape[::-1])[..., 1]
        return (green > 100).astype(np.uint8)[..., None], None

    datamodule = HPADataModule(
        kaggle_data, input_size=64, cache_dir=tmp_path / "cache", num_workers=0, aug_mode=2, mask_reader=green_band_mask
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    for index in range(6):
        sample = datamodule.train_set[index]
        assert sample["target"].shape == (1, 64, 64) and sample["target"].dtype == torch.uint8
        torch.testing.assert_close(sample["target"][0], (sample["image"][1] > 100).to(torch.uint8))


def test_training_crops_keep_image_and_mask_aligned_and_validation_sees_the_whole_image(kaggle_data, tmp_path):
    def green_band_mask(image_id: str, shape: tuple[int, int]) -> np.ndarray:
        green = resize_image(read_rgby(kaggle_data, image_id), shape[::-1])[..., 1]
        return (green > 100).astype(np.float32)[..., None], None

    datamodule = HPADataModule(
        kaggle_data, input_size=64, crop_size=32, cache_dir=tmp_path / "cache", num_workers=0, aug_mode=2,
        mask_reader=green_band_mask,
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    sample = datamodule.train_set[0]
    assert sample["image"].shape == (4, 32, 32) and sample["target"].shape == (1, 32, 32)
    torch.testing.assert_close(sample["target"][0], (sample["image"][1] > 100).float())
    assert datamodule.val_set[0]["image"].shape == (4, 64, 64)


def test_crop_larger_than_the_input_is_refused(kaggle_data):
    with pytest.raises(ValueError, match="--crop_size 96"):
        HPADataModule(kaggle_data, input_size=64, crop_size=96, num_workers=0)


def test_extra_data_rows_of_the_mode_join_training_only(kaggle_data, tmp_path):
    ext_dir = tmp_path / "extra"
    (ext_dir / "publichpa").mkdir(parents=True)
    for image_id in ("ext1", "ext2"):
        for channel in ("red", "green", "blue", "yellow"):
            cv2.imwrite(str(ext_dir / "publichpa" / f"{image_id}_{channel}.png"), np.full((80, 80), 60, np.uint8))
    csv = tmp_path / "extra.csv"
    csv.write_text(
        "ID,Label_idx,dir,file_ext,isin_dataset,in_trainset\n"
        "ext1,3|5,publichpa,png,True,False\next2,4,publichpa,png,True,False\next3,4,publichpa,png,False,False\n"
        "img001,2,publichpa,png,True,True\n"
    )
    datamodule = HPADataModule(
        kaggle_data, input_size=32, cache_dir=tmp_path / "cache", num_workers=0,
        use_ext_data=True, ext_data_csv=csv, ext_data_dir=ext_dir, ext_data_mode=0,
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_ids = [datamodule.train_set[i]["id"] for i in range(len(datamodule.train_set))]
    val_ids = [datamodule.val_set[i]["id"] for i in range(len(datamodule.val_set))]
    assert {"ext1", "ext2"} <= set(train_ids) and "ext3" not in train_ids and not {"ext1", "ext2"} & set(val_ids)
    assert len(train_ids) + len(val_ids) == 22
    sample = datamodule.train_set[train_ids.index("ext1")]
    assert sample["target"].nonzero().flatten().tolist() == [3, 5] and sample["image"].shape == (4, 32, 32)


def test_warmup_is_linear_then_cosine_reaches_zero():
    factors = [warmup_cosine(step, 100, 0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert warmup_cosine(100, 100, 0.1) == pytest.approx(0.0)


def test_macro_average_precision_skips_absent_classes():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.7, 0.6, 0.5]])
    assert macro_average_precision(probs, targets) == pytest.approx(1.0)


def test_macro_average_precision_on_an_imperfect_ranking_by_hand():
    # class 0 ranked: pos, neg, pos, neg -> AP = 1/2 x 1 + 1/2 x 2/3; class 1: its one positive ranked second -> 1/2;
    # class 2 has no positive and is skipped
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.9, 0.1], [0.8, 0.5, 0.2], [0.7, 0.2, 0.3], [0.1, 0.3, 0.4]])
    assert macro_average_precision(probs, targets) == pytest.approx(((0.5 + 0.5 * 2 / 3) + 0.5) / 2)


@pytest.mark.slow  # two processes starting Lightning: 24 s; run with -m slow
def test_ddp_on_two_cpu_processes_writes_one_checkpoint_set(kaggle_data, tmp_path):
    run_script("run_classification.py", *train_args(kaggle_data, tmp_path, "--devices", "2", "--strategy", "ddp"))
    versions = list((tmp_path / "lightning_logs").iterdir())
    assert [v.name for v in versions] == ["version_0"]
    assert sorted(p.name for p in (versions[0] / "checkpoints").iterdir()) == ["epoch-0-step-2.ckpt", "last.ckpt"]
    assert len(list(tmp_path.rglob("hparams.yaml"))) == 1


@pytest.mark.parametrize(("monitor", "mode"), [("val/loss", "min"), ("val/F1", "max")])
def test_monitor_chooses_the_kept_checkpoints_metric(tmp_path, monitor, mode):
    args = run_classification.parse_args(
        ["--data_dir", str(tmp_path), "--default_root_dir", str(tmp_path), "--accelerator", "cpu", "--monitor", monitor]
    )
    _, checkpoint, _ = build_trainer(args)
    assert (checkpoint.monitor, checkpoint.mode) == (monitor, mode)


def test_onecycle_schedule_peaks_at_lr_after_the_rise_and_anneals():
    from src.training.lit_model import build_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = build_scheduler("onecycle", optimizer, total_steps=100, warmup_ratio=0.3)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert int(np.argmax(lrs)) == pytest.approx(29, abs=1) and max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert lrs[0] < 0.01 and lrs[-1] < 1e-4
    with pytest.raises(ValueError, match="--scheduler must be one of"):
        build_scheduler("step", optimizer, 100)


def backbone_and_head_steps(backbone_lr_scale: float) -> tuple[float, float]:
    """How far one plain SGD step moves the backbone and the head of the same seeded cell classifier."""
    torch.manual_seed(0)
    hparams = {"timm_model_name": "cell_cnn", "timm_kwargs": '{"widths": [4, 8]}', "cell_crop_dir": "store"}
    model = LitModel(build_network(hparams), build_criterion({"loss": "bce"}), **hparams)
    optimizer = torch.optim.SGD(parameter_groups(model, 0.1, backbone_lr_scale), lr=0.1)
    before = {name: p.detach().clone() for name, p in model.network.named_parameters()}
    torch.manual_seed(1)
    logits = model(torch.randn(6, 4, 32, 32))["logits"]
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.rand(6, 19).round()).backward()
    optimizer.step()
    moved = {name: float((p.detach() - before[name]).abs().sum()) for name, p in model.network.named_parameters()}
    backbone = sum(v for name, v in moved.items() if name.startswith("backbone."))
    return backbone, sum(moved.values()) - backbone


def test_backbone_lr_scale_slows_or_fixes_the_backbone_and_leaves_the_head_at_lr():
    full_backbone, full_head = backbone_and_head_steps(1.0)
    slow_backbone, slow_head = backbone_and_head_steps(0.1)
    fixed_backbone, fixed_head = backbone_and_head_steps(0.0)
    assert full_backbone > 0 and full_head > 0
    assert slow_backbone == pytest.approx(0.1 * full_backbone, rel=1e-3)  # plain SGD: the step is lr x gradient
    assert slow_head == pytest.approx(full_head, rel=1e-5) and fixed_head == pytest.approx(full_head, rel=1e-5)
    assert fixed_backbone == 0.0


def test_backbone_lr_scale_below_zero_is_refused_before_training():
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        parameter_groups(torch.nn.Linear(2, 2), 0.1, -0.5)
    args = run_classification.parse_args(
        ["--data_dir", "data", "--timm_model_name", "cell_cnn", "--backbone_lr_scale", "-1"]
    )
    with pytest.raises(ValueError, match="--backbone_lr_scale must be >= 0"):
        check_shared_args(args)


@pytest.mark.slow
def test_lr_find_saves_the_curve_and_prints_a_usable_suggestion(tiny_synthetic, tmp_path):
    result = run_script(
        "run_classification.py", "--data_dir", str(tiny_synthetic), "--timm_model_name", "test_resnet",
        "--input_size", "64", "--cache_size", "128", "--batch_size", "4", "--num_workers", "0", "--accelerator", "cpu",
        "--default_root_dir", str(tmp_path), "--lr_find", "--lr_find_steps", "30",
    )  # fmt: skip
    suggestion = float(result.stdout.split("suggested --lr ")[1].split()[0])
    assert suggestion > 0 and (tmp_path / "lr_find.png").is_file()
    assert len(json.loads((tmp_path / "lr_find.json").read_text())["lr"]) == 30


def test_aug_mode_3_adds_an_elastic_deformation_and_keeps_the_shapes():
    from src.training.augment import build_transforms

    transform = build_transforms(3, 64, train=True)
    assert "ElasticTransform" in [type(t).__name__ for t in transform.transforms]
    image = np.random.default_rng(0).integers(0, 255, (80, 80, 4), dtype=np.uint8)
    out = transform(image=image, mask=np.zeros((80, 80), dtype=np.uint8))
    assert out["image"].shape == (64, 64, 4) and out["mask"].shape == (64, 64)


def test_macro_average_precision_of_soft_targets_counts_those_above_one_half():
    """The cell classifier validates on soft pseudo labels: they are scored as their 0.5-binarised labels."""
    probs = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.1], [0.1, 0.7]])
    soft = np.array([[0.8, 0.3], [0.2, 0.9], [0.55, 0.0], [0.4, 0.49]])
    hard = (soft > 0.5).astype(float)
    assert macro_average_precision(probs, soft) == macro_average_precision(probs, hard)
    # class 0: positives ranked 1st and 2nd -> 1; class 1: the one positive (0.8) ranked 1st -> 1
    assert macro_average_precision(probs, soft) == pytest.approx(1.0)
    assert macro_average_precision(probs[::-1].copy(), soft) < 1.0
