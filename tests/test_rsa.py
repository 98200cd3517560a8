"""RSA (rsa.py, relative.py, datasets/captions.py, datasets/void.py): each step against written-out numpy, their
checkpoint format, eval.py and predict.py on synthetic/rsa_like.py data, and the bad inputs (one line each).
Parity with their unedited code is checked outside the repository (docs/rsa.md)."""
import io
import json
import os
import random

import numpy as np
import pytest
import torch

import cli
import eval as evaluation
import predict
import protocols
import rsa
from calculate_error import errors, score_image, valid_pixels
from datasets import captions, kitti, void
from protocols import PROTOCOLS, RSA_METRICS
from synthetic.rsa_like import make_lanscale, write_dataset

# their LanScaleModel's parameters (RSA/lanscale.py at rsa.RSA_COMMIT): name -> shape, for text_feat_dim=1024
THEIR_SHAPES = {"scene_feat_net.0": (512, 1024), "scene_feat_net.2": (512, 512), "scene_feat_net.4": (512, 512),
                "scene_feat_net.6": (256, 512), "scene_feat_net.8": (256, 256)}
for net in ("scale_net", "shift_net"):
    THEIR_SHAPES.update({f"{net}.0": (256, 256), f"{net}.2": (128, 256), f"{net}.4": (128, 128), f"{net}.6": (64, 128),
                         f"{net}.8": (1, 64)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsa")
    write_dataset(str(root), count=2, seed=1)
    return root


def run_cli(main, argv, capsys):
    """(exit code, stdout, stderr) of a script's main through cli.run."""
    try:
        cli.run(lambda: main(argv))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def eval_args(data, dataset, checkpoint, *extra, model="lanscale.pt"):
    places = {"nyu": ["--data_path", f"{data}/nyu", "--testfile_nyu", f"{data}/nyu/test_list.txt"],
              "kitti": ["--data_path", f"{data}/kitti", "--testfile_kitti", f"{data}/kitti/test_list.txt"],
              "void": ["--data_path", f"{data}/void", "--testfile", f"{data}/void/test_image.txt"]}
    return ["--dataset", dataset, *places[dataset], "--relative", f"npy:{data}/relative/{dataset}", "--align",
            "language", "--scale_model", f"{data}/{model}", "--captions", f"{data}/text", "--clip_model", checkpoint,
            "--device", "cpu", *extra]


# ---------------------------------------------------------------- LanScale and its files
def test_lanscale_has_their_parameters_and_computes_their_mlp():
    model = make_lanscale(0)
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items() if k.endswith(".weight")} == \
        {f"{k}.weight": v for k, v in THEIR_SHAPES.items()}
    features = torch.randn(3, 1024, generator=torch.Generator().manual_seed(0))

    def mlp(x, net):
        for i in range(0, 10, 2):
            x = x @ state[f"{net}.{i}.weight"].numpy().T + state[f"{net}.{i}.bias"].numpy()
            if i < 8:
                x = np.where(x > 0, x, 0.01 * x)  # LeakyReLU's default slope
        return x

    scene = mlp(features.numpy(), "scene_feat_net")
    scale, shift = model(features)
    np.testing.assert_allclose(scale.detach().numpy(), np.exp(mlp(scene, "scale_net"))[:, 0], rtol=1e-5)
    np.testing.assert_allclose(shift.detach().numpy(), np.exp(mlp(scene, "shift_net"))[:, 0], rtol=1e-5)


@pytest.mark.parametrize("prefix,wrapped", [("", True), ("module.", True), ("", False)])
def test_their_checkpoints_load_with_or_without_dataparallel(tmp_path, prefix, wrapped):
    model = make_lanscale(2)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "model-100"
    torch.save({"global_step": 100, "model": state} if wrapped else state, path)
    loaded, settings = rsa.load_scale_model(str(path), text_width=1024)
    features = torch.randn(2, 1024)
    assert torch.equal(loaded(features)[0], model(features)[0])
    assert settings == ({"source": "RSA checkpoint", "global_step": 100} if wrapped else {"source": "RSA checkpoint"})


def test_ours_round_trips_with_settings(tmp_path):
    model = make_lanscale(3, text_width=64)
    path = str(tmp_path / "scale.safetensors")
    rsa.save_scale_model(model, path, {"clip_model": "RN50", "relative_kind": "disparity"})
    loaded, settings = rsa.load_scale_model(path)
    assert settings == {"format": 1, "text_width": 64, "clip_model": "RN50", "relative_kind": "disparity"}
    features = torch.randn(2, 64)
    assert torch.equal(loaded(features)[1], model(features)[1])


def test_scale_model_files_that_do_not_fit_are_one_line(tmp_path):
    narrow = str(tmp_path / "narrow.safetensors")
    rsa.save_scale_model(make_lanscale(0, text_width=512), narrow)
    with pytest.raises(ValueError, match="takes 512-wide text features but the CLIP loaded gives 1024"):
        rsa.load_scale_model(narrow, text_width=1024)
    small = {"scene_feat_net.0.weight": torch.zeros(512, 1024), "scene_feat_net.0.bias": torch.zeros(512)}
    torch.save({"model": small}, tmp_path / "old")
    with pytest.raises(ValueError, match="older, smaller LanScale"):
        rsa.load_scale_model(str(tmp_path / "old"))
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        rsa.load_scale_model(str(tmp_path / "junk.pt"))
    with pytest.raises(ValueError, match="no such file"):
        rsa.load_scale_model(str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------- depth and their evaluation
def their_compute_errors(gt, pred):
    """Their utils.compute_errors, written out: gt, pred (N,) float32 numpy -> {metric: float}."""
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    expected = {"a1": (thresh < 1.25).mean(), "a2": (thresh < 1.25 ** 2).mean(), "a3": (thresh < 1.25 ** 3).mean(),
                "rmse": np.sqrt(((gt - pred) ** 2).mean()), "rmse_log": np.sqrt((err ** 2).mean()),
                "abs_rel": np.mean(np.abs(gt - pred) / gt), "sq_rel": np.mean((gt - pred) ** 2 / gt),
                "silog": np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2) * 100,
                "log10": np.mean(np.abs(np.log10(pred) - np.log10(gt)))}
    return {k: float(v) for k, v in expected.items()}


def rsa_score(gt, depth, dataset):
    """One image scored by RSA's row of dataset: its metrics (the fit's scale and shift left out)."""
    scored = score_image(gt, depth, PROTOCOLS[f"{dataset.lower()}_rsa"])
    return {name: scored[name] for name in RSA_METRICS}


def test_metric_depth_of_inverse_depth_and_of_depth():
    relative = np.array([[[0.0, 0.5], [2.0, 10.0]], [[1.0, 1.0], [3.0, 0.25]]], np.float32)
    scale, shift = np.array([2.0, 0.5], np.float32), np.array([0.1, 0.2], np.float32)
    got = rsa.metric_depth(torch.from_numpy(relative), torch.from_numpy(scale), torch.from_numpy(shift))
    np.testing.assert_allclose(got.numpy(), 1 / (scale[:, None, None] * relative + shift[:, None, None]), rtol=1e-6)
    depth = relative[1:] + 1
    got = rsa.metric_depth(torch.from_numpy(depth), torch.tensor([2.0]), torch.tensor([0.1]), kind="depth")
    np.testing.assert_allclose(got.numpy(), 1 / (2.0 / depth + 0.1), rtol=1e-6)
    got = rsa.metric_depth(torch.ones(1, 1, 1), torch.tensor([1.0]), torch.tensor([0.0]), eps=rsa.TRAIN_EPS)
    assert got.item() == pytest.approx(1 / (1 + 1e-8))


def test_their_clamps_mask_and_kitti_region():
    protocol = PROTOCOLS["nyu_rsa"]
    assert protocol.valid_range == protocol.clamp == (0.2, 10.0)  # change_to_void's 0.2 stays for NYU
    assert not protocol.max_inclusive and protocol.floor is None and not protocol.clamp_truth
    depth = np.array([-np.inf, np.inf, np.nan, 0.1, 0.2, 5.0, 10.0, 11.0], np.float32)
    clamped = np.array([0.2, 10.0, 0.2, 0.2, 0.2, 5.0, 10.0, 10.0], np.float32)  # their order: below min -> min,
    # above max -> max, then inf -> max and NaN -> min
    gt = np.linspace(1.0, 8.0, 8).astype(np.float32)
    for i in range(8):  # each pixel as a one-pixel image: its rmse is |gt - clamped|
        row = score_image(gt[i].reshape(1, 1), depth[i].reshape(1, 1), protocol)
        assert row["rmse"] == float(abs(gt[i] - clamped[i])), depth[i]  # float32 as theirs
    assert rsa_score(gt[None], depth[None], "NYU") == their_compute_errors(gt, clamped)
    gt = np.array([[0.2, 0.21, 9.99, 10.0]], np.float32)
    assert valid_pixels(gt, gt, protocol).tolist() == [[False, True, True, False]]  # both ends open
    region = valid_pixels(np.full((352, 1216), 5.0, np.float32), np.ones((352, 1216), np.float32),
                          PROTOCOLS["kitti_rsa"])
    rows, cols = np.nonzero(region)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (143, 349, 43, 1172)  # Garg's of the box
    full = np.zeros((375, 1242), np.float32)
    full[23:, 13:1229] = 1
    box = full[kitti.benchmark_box(*full.shape)]
    assert box.shape == (352, 1216) and box.all()
    assert PROTOCOLS["kitti_rsa"].truth_region == "kitti_box"  # their loader's do_kb_crop, before the crop


def test_errors_are_their_compute_errors():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 9, 500).astype(np.float32)
    pred = (gt * rng.uniform(0.7, 1.4, 500)).astype(np.float32)
    got = errors(gt, pred, RSA_METRICS, protocols.RSA)
    assert got == their_compute_errors(gt, pred)  # float32 as theirs: equal to the bit
    assert list(got) == ["a1", "a2", "a3", "abs_rel", "log10", "rmse", "rmse_log", "sq_rel", "silog"]
    assert all(np.isnan(v) for v in errors(gt[:0], pred[:0], RSA_METRICS, protocols.RSA).values())


# ---------------------------------------------------------------- captions and their features
def test_captions_as_their_get_text_reads_them(data):
    folder = captions.split_folder(str(data / "text"), "NYU", "test")
    assert folder == str(data / "text" / "text_all" / "nyu" / "test")
    path = captions.caption_path(folder, "bathroom/rgb_00001.jpg bathroom/sync_depth_00001.png 518.8579")
    assert path == os.path.join(folder, "bathroom", "rgb_00001.txt")
    assert captions.caption_path(folder, "/bathroom/rgb_00001.jpg") == path  # their NYU training list's '/'
    lines = captions.read_captions(path)
    assert len(lines) == 15 and captions.pick_caption(lines, "eval") == lines[0]
    drawn = [captions.pick_caption(lines, "train", random.Random(5)) for _ in range(1)]
    assert drawn == [lines[random.Random(5).randint(0, 14)]]
    assert captions.get_text(folder, ["bathroom/rgb_00001.jpg"], "eval") == [lines[0]]
    panoptic = captions.read_panoptic(captions.caption_path(captions.split_folder(str(data / "text"), "NYU", "test",
                                                                                  "seg_txt_panoptic"),
                                                            "bathroom/rgb_00001.jpg"))
    assert len(panoptic) == 4 and all(0 < fraction < 1 for _, fraction in panoptic)


def test_caption_files_missing_or_short_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="no caption file .*prepare_captions"):
        captions.read_captions(str(tmp_path / "missing.txt"))
    (tmp_path / "short.txt").write_text("one caption\n")
    assert captions.read_captions(str(tmp_path / "short.txt"), need=1) == ["one caption"]
    with pytest.raises(ValueError, match="has 1 line.*training draws one of 15"):
        captions.get_text(str(tmp_path), ["short.png"], "train")


def test_caption_features_are_encode_text_run_once_per_caption(checkpoint, tmp_path):
    from clip_runtime import FrozenCLIP
    backbone = FrozenCLIP(checkpoint, device="cpu")
    calls = []
    encode_text = backbone.model.encode_text
    backbone.model.encode_text = lambda tokens: calls.append(len(tokens)) or encode_text(tokens)
    encoder = rsa.CaptionEncoder(backbone, cache_dir=str(tmp_path))
    got = encoder(["a room\n", "a street", "a room"])
    assert calls == [2]  # two distinct captions, one pass
    with torch.no_grad():  # unnormalized, truncated tokens, float: their train_3d.py
        expected = encode_text(backbone.tokenize(["a room", "a street"], truncate=True)).float()
    assert torch.equal(got, expected[[0, 1, 0]])
    again = rsa.CaptionEncoder(backbone, cache_dir=str(tmp_path))(["a street"])
    assert calls == [2] and torch.equal(again[0], expected[1])  # read from the disk cache


# ---------------------------------------------------------------- eval.py and predict.py
def library_rows(data, dataset, checkpoint):
    """What rsa.py computes step by step for the generated images: {file: (scale, shift, metrics)}."""
    from clip_runtime import FrozenCLIP
    from datasets import kitti, nyu
    encoder = rsa.CaptionEncoder(FrozenCLIP(checkpoint, device="cpu"))
    model, _ = rsa.load_scale_model(str(data / "lanscale.pt"))
    folder = captions.split_folder(str(data / "text"), dataset, "test")
    if dataset == "void":
        files = [line.strip() for line in open(data / "void" / "test_image.txt")]
    else:
        files = [line.split()[0] for line in open(data / dataset / "test_list.txt") if line.split()[1] != "None"]
    rows = {}
    for file in files:
        with torch.no_grad():
            scale, shift = model(encoder(captions.get_text(folder, [file], "eval")))
        depth = rsa.metric_depth(torch.from_numpy(np.load(data / "relative" / dataset / (file[:-4] + ".npy")))[None],
                                 scale, shift)[0].numpy()
        if dataset == "nyu":
            gt = nyu.load_depth(str(data / "nyu" / nyu.SPLIT_DIR / file.replace("rgb_", "sync_depth_")
                                    .replace(".jpg", ".png")), clip=False)[0].numpy()
        elif dataset == "kitti":
            frame = kitti.load_depth(str(data / "kitti" / kitti.GT_FOLDER / kitti.gt_of(file)))[0].numpy()
            gt = frame[kitti.benchmark_box(*frame.shape)]  # their loader's do_kb_crop
        else:
            gt = void.load_depth(str(data / "void" / void.ground_truth_of(file)))
        rows[file] = (scale.item(), shift.item(), rsa_score(gt, depth, dataset))
    return rows


@pytest.mark.parametrize("dataset", ["nyu", "kitti", "void"])
def test_eval_language_rows_are_rsa_step_by_step_with_scale_and_shift(data, checkpoint, dataset, tmp_path):
    report = evaluation.main(eval_args(data, dataset, checkpoint, "--output", str(tmp_path / "r.json")))
    expected = library_rows(data, dataset, checkpoint)
    assert report["config"]["protocol"] == "rsa" and report["config"]["align"] == "language"
    assert report["config"]["scored_as"] == f"{dataset}_rsa"
    assert {row["file"] for row in report["per_image"]} == set(expected)
    for row in report["per_image"]:
        scale, shift, metrics = expected[row["file"]]
        assert (row["scale"], row["shift"]) == pytest.approx((scale, shift), rel=1e-6)
        assert {k: row[k] for k in RSA_METRICS} == pytest.approx(metrics, rel=1e-6)
    assert json.loads((tmp_path / "r.json").read_text())["per_image"] == report["per_image"]


def test_eval_fits_the_same_maps_for_their_baselines(data, checkpoint):
    argv = eval_args(data, "nyu", checkpoint)
    argv = argv[:argv.index("--align")] + ["--align", "lstsq_disparity", "--clip_model", checkpoint, "--device", "cpu"]
    report = evaluation.main(argv)
    assert report["config"]["protocol"] == "rsa" and report["config"]["method"] == "relative"
    assert all(row["scale"] > 0 for row in report["per_image"])  # the generated maps are affine in 1 / gt,
    assert report["metrics"]["a1"] > 0.9  # all but the "sky" rows, which the generator zeroes


def test_eval_bad_inputs_are_one_line(data, checkpoint, tmp_path, capsys):
    relative = tmp_path / "relative"
    for file, array in {"bathroom/rgb_00001.npy": np.ones((240, 320), np.float32),
                        "kitchen/rgb_00008.npy": -np.ones((480, 640), np.float32)}.items():
        (relative / os.path.dirname(file)).mkdir(parents=True, exist_ok=True)
        np.save(relative / file, array)
    argv = eval_args(data, "nyu", checkpoint)
    argv[argv.index("--relative") + 1] = f"npy:{relative}"
    code, _, err = run_cli(evaluation.main, argv + ["--limit", "1"], capsys)
    assert code == 1 and "the relative map is 320x240 but NYU image bathroom/rgb_00001.jpg is scored on 640x480" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1  # besides the progress bar
    listing = tmp_path / "list.txt"
    listing.write_text("kitchen/rgb_00008.jpg kitchen/sync_depth_00008.png\n")
    argv[argv.index("--testfile_nyu") + 1] = str(listing)
    code, _, err = run_cli(evaluation.main, argv, capsys)
    assert code == 1 and "negative inverse depth" in err
    argv = eval_args(data, "nyu", checkpoint)
    argv[argv.index("--captions") + 1] = str(tmp_path)
    code, _, err = run_cli(evaluation.main, argv, capsys)
    assert code == 1 and "no caption file" in err and "rgb_00001.txt" in err
    narrow = tmp_path / "narrow.safetensors"
    rsa.save_scale_model(make_lanscale(0, text_width=512), str(narrow))
    argv = eval_args(data, "nyu", checkpoint)
    argv[argv.index("--scale_model") + 1] = str(narrow)
    code, _, err = run_cli(evaluation.main, argv, capsys)
    assert code == 1 and "takes 512-wide text features but the CLIP loaded gives 1024-wide" in err
    code, _, err = run_cli(evaluation.main, ["--align", "language", "--relative", f"npy:{relative}"], capsys)
    assert code == 2 and "--scale_model" in err


def test_relative_maps_refuse_what_the_formula_cannot_take():
    with pytest.raises(ValueError, match="negative inverse depth"):
        rsa.check_relative(np.array([[0.5, -0.1]]), "disparity", "x")
    with pytest.raises(ValueError, match="at or below 0"):
        rsa.check_relative(np.array([[0.5, 0.0]]), "depth", "x")
    with pytest.raises(ValueError, match="NaN or infinite"):
        rsa.check_relative(np.array([[np.nan, 1.0]]), "disparity", "x")
    rsa.check_relative(np.array([[0.0, 1.0]]), "disparity", "x")  # a ReLU's 0: scored at 1 / t, as theirs


def test_predict_prints_scale_and_shift_and_writes_the_metric_map(data, checkpoint, tmp_path, capsys):
    image = data / "nyu" / "official_splits" / "test" / "bathroom" / "rgb_00001.jpg"
    relative = data / "relative" / "nyu" / "bathroom" / "rgb_00001.npy"
    argv = [str(image), "--relative", f"npy:{relative}", "--caption", "A small bathroom.", "--scale_model",
            str(data / "lanscale.safetensors"), "--clip_model", checkpoint, "--device", "cpu", "--npy", "-o",
            str(tmp_path)]
    code, out, err = run_cli(predict.main, argv, capsys)
    assert code == 0, err
    from clip_runtime import FrozenCLIP
    model, _ = rsa.load_scale_model(str(data / "lanscale.safetensors"))
    with torch.no_grad():
        scale, shift = model(rsa.CaptionEncoder(FrozenCLIP(checkpoint, device="cpu"))(["A small bathroom."]))
    assert f"scale {scale.item():.6g}, shift {shift.item():.6g}" in out
    written = np.load(tmp_path / "rgb_00001_depth.npy")
    np.testing.assert_allclose(written, 1 / (scale.item() * np.load(relative) + shift.item()), rtol=1e-6)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((10, 10), np.float32))
    argv[argv.index("--relative") + 1] = f"npy:{wrong}"
    code, _, err = run_cli(predict.main, argv + ["--overwrite"], capsys)
    assert code == 1 and "is 10x10 but image" in err


# ---------------------------------------------------------------- VOID
def test_void_reads_their_list_in_order_and_png_over_256(data):
    entries = void.read_entries(str(data / "void"), str(data / "void" / "test_image.txt"))
    assert [image for image, _ in entries] == [line.strip() for line in open(data / "void" / "test_image.txt")]
    gt_file = entries[0][1]
    assert gt_file == entries[0][0].replace("/image/", "/ground_truth/")
    from PIL import Image
    raw = np.asarray(Image.open(data / "void" / gt_file), np.float32)
    np.testing.assert_array_equal(void.load_depth(str(data / "void" / gt_file)), raw / 256.0)
    with pytest.raises(ValueError, match="VOID files are missing"):
        void.read_entries(str(data / "nyu"), str(data / "void" / "test_image.txt"))
    with open(void.DEFAULT_TEST_LIST) as f:
        shipped = f.read().split()
    assert len(shipped) == 800 and shipped[0] == "void_1500/data/desktop2/image/1552625295.7828.png"


def test_void_without_relative_counts_only_their_range():
    """VOID without --relative (row void_range): the suite's Marigold metrics over 0.2 < gt < 5 m only, both ends
    open, as RSA's eval_void counts (not every gt > 0)."""
    row = PROTOCOLS["void_range"]
    edges = np.array([[0.0, 0.1, 0.2, 0.21, 4.99, 5.0, 6.0]], np.float32)
    assert valid_pixels(edges, edges, row).tolist() == [[False, False, False, True, True, False, False]]
    gt = np.random.default_rng(3).uniform(0, 7, (48, 64)).astype(np.float32)
    pred = np.full_like(gt, 2.0)
    got = score_image(gt, pred, row)
    g = gt[(gt > 0.2) & (gt < 5)].astype(np.float64)
    assert 0 < g.size < (gt > 0).sum()
    ratio = np.maximum(g.astype(np.float32) / np.float32(2), np.float32(2) / g.astype(np.float32))
    assert got["abs_rel"] == np.mean(np.abs(g - 2.0) / g) and got["rmse"] == np.sqrt(np.mean((g - 2.0) ** 2))
    assert got["a1"] == np.mean(ratio < 1.25)


# ---------------------------------------------------------------- their caption files: prepare_captions
@pytest.fixture(scope="module")
def caption_server(tmp_path_factory):
    """Their repository's archive as GitHub's codeload serves it, with a caption file (and panoptic lines) for
    every image of the three test lists and one training caption, served on 127.0.0.1."""
    import http.server
    import tarfile
    import threading
    from datasets import prepare_captions
    served = tmp_path_factory.mktemp("served")
    archive = served / captions.RSA_REPO / "tar.gz" / rsa.RSA_COMMIT
    archive.parent.mkdir(parents=True)
    top = f"RSA-{rsa.RSA_COMMIT}/RSA"
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, text):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for dataset, folder in captions.DATASETS.items():
            for path in prepare_captions.image_paths(dataset, "test", "unused"):
                add(f"text/text_all/{folder}/test/{path[:-4]}.txt", "".join(f"caption {i}\n" for i in range(15)))
                add(f"text/seg_txt_panoptic/{folder}/test/{path[:-4]}.txt", "wall 0.5\n")
        add("text/text_all/nyu/train/basement_0001a/rgb_00000.txt", "a basement\n" * 15)
        add("data_splits/void/train_image.txt", "void_1500/data/x/image/1.png\n")
        add("README.md", "not kept\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(
        *a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_prepare_captions_urls_download_and_check(caption_server, tmp_path, capsys):
    from datasets import prepare_captions
    root = tmp_path / "RSA_text"
    assert prepare_captions.main(["--urls"]) == 0
    assert f"https://codeload.github.com/{captions.RSA_REPO}/tar.gz/{rsa.RSA_COMMIT}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        prepare_captions.main(["--check", "--root", str(root), "--splits", "test"])
    assert "text_all NYU test: 0 of 654 caption files" in capsys.readouterr().out
    assert prepare_captions.main(["--download", "--root", str(root), "--splits", "test", "--mirror",
                                  caption_server]) == 0
    out = capsys.readouterr().out
    assert "text_all KITTI test: 652 of 652" in out and "seg_txt_panoptic VOID test: 800 of 800" in out
    assert not (root / "text_all" / "nyu" / "train").exists()  # --splits test keeps the test captions only
    assert (root / "data_splits" / "void" / "train_image.txt").is_file() and not (root / "README.md").exists()
    assert [f for f in os.listdir(root) if f.endswith((".gz", ".part"))] == []  # the archive is removed
    folder = captions.split_folder(str(root), "NYU", "test")
    assert captions.get_text(folder, ["bathroom/rgb_00045.jpg"], "eval") == ["caption 0"]


def test_depthclip_map_inverted_and_scaled_by_language(data, checkpoint, model):
    from clip_runtime import FrozenCLIP
    from datasets import nyu
    argv = eval_args(data, "nyu", checkpoint, "--limit", "1")
    argv[argv.index("--relative") + 1] = "depthclip"
    row = evaluation.main(argv)["per_image"][0]
    rgb = nyu.load_rgb(str(data / "nyu" / nyu.SPLIT_DIR / row["file"]), "imagenet", box=None)  # the whole frame
    depth = model.predict(rgb[None], flip=True, size=nyu.FRAME)[0, 0]  # DepthCLIP's own map, a depth
    scale_model, _ = rsa.load_scale_model(str(data / "lanscale.pt"))
    folder = captions.split_folder(str(data / "text"), "NYU", "test")
    with torch.no_grad():
        scale, shift = scale_model(rsa.CaptionEncoder(FrozenCLIP(checkpoint, device="cpu"))(
            captions.get_text(folder, [row["file"]], "eval")))
    gt = nyu.load_depth(str(data / "nyu" / nyu.SPLIT_DIR / row["file"].replace("rgb_", "sync_depth_")
                            .replace(".jpg", ".png")), clip=False)[0].numpy()
    metric = 1 / (scale.item() / depth.numpy() + shift.item())
    expected = rsa_score(gt, metric, "NYU")
    assert {k: row[k] for k in RSA_METRICS} == pytest.approx(expected, rel=1e-5)


def test_the_suite_takes_relative_maps_and_scores_as_its_source(checkpoint, data, tmp_path):
    from datasets import zeroshot
    from test_zeroshot import zeroshot_errors
    from synthetic.zeroshot_like import write_dataset as write_suite
    root = tmp_path / "scannet"
    write_suite("SCANNET", str(root), count=1)
    rgb, depth_file = open(root / "list.txt").read().split()[:2]
    gt = zeroshot.read_ground_truth("SCANNET", str(root), (rgb, depth_file, None))[0]
    (tmp_path / "rel" / os.path.dirname(rgb)).mkdir(parents=True)
    relative = np.where(gt > 0, 1 / np.maximum(gt, 1e-3), 0.1).astype(np.float32)
    np.save(tmp_path / "rel" / (rgb[:-4] + ".npy"), relative)
    (tmp_path / "cap" / os.path.dirname(rgb)).mkdir(parents=True)
    (tmp_path / "cap" / (rgb[:-4] + ".txt")).write_text("A living room with a sofa.\n")  # one line of one's own
    report = evaluation.main(["--dataset", "SCANNET", "--data_path", str(root), "--testfile", str(root / "list.txt"),
                              "--relative", f"npy:{tmp_path / 'rel'}", "--align", "language", "--scale_model",
                              str(data / "lanscale.pt"), "--captions", str(tmp_path / "cap"), "--clip_model",
                              checkpoint, "--device", "cpu"])
    row = report["per_image"][0]
    assert report["config"]["protocol"] == "depthclip" and "scale" in row  # the suite's own scoring
    assert report["config"]["scored_as"] == "scannet_marigold"
    metric = 1 / (np.float32(row["scale"]) * relative + np.float32(row["shift"]))
    expected = zeroshot_errors(gt, metric, (gt > 0) & (gt < 10), zeroshot.PROTOCOLS["SCANNET"].clip)
    assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-5)


def test_playground_caption_sets_the_scale_of_depthclips_map(data, model):
    import demo
    import relative
    import visualize
    from PIL import Image
    image = Image.open(data / "nyu" / "official_splits" / "test" / "bathroom" / "rgb_00001.jpg").resize((128, 96))
    language = relative.Language(str(data / "lanscale.pt"), model.backbone)
    playground = demo.Playground(model, long_side=128, language=language)
    settings = (image, "close, far", "1, 3", "This {} is {}.", "object", 0.1, "paper", False, 100.0, None)
    _, _, _, files = playground.render(*settings)
    plain = np.asarray(Image.open(files[0]), np.float32)
    _, _, _, files = playground.render(*settings, caption="A small bathroom with a sink.")
    scale, shift = language(["A small bathroom with a sink."])
    assert f"RSA: scale {scale.item():.4g}, shift {shift.item():.4g}" in playground.notes[-1]
    depthclip = plain / 1000.0  # the PNG's millimetres (depth under 65 m)
    expected = visualize.depth_png(1 / (scale.item() / depthclip + shift.item())).data
    got = np.asarray(Image.open(files[0]), np.float32)
    assert np.abs(got - np.asarray(Image.open(io.BytesIO(expected)), np.float32)).max() <= 1  # the PNGs' rounding
