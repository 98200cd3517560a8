"""CLIP's image tower on a CPU through a graph runtime (--runtime): OpenVINO or ONNX Runtime run the very function
PyTorch runs (CLIP.encode_image_dense for one feature kind), exported once per input size and kept on disk.

    tower = GraphTower("openvino", clip, weights_id="<sha256>", precision="fp32")
    tower.encode_image_dense(images, "trunk")   # (B, 3, H, W) -> (B, C, H/s, W/s), as the CLIP's own method

Why: on a CPU, PyTorch's eager execution of the ResNet trunk leaves speed behind that a graph compiler takes
(docs/speed.md has the measurements). Both runtimes read the same ONNX file, exported with torch.onnx (opset 17)
at a fixed input size (a ViT's attention reshapes are traced with the token count, so one graph per size; a
ResNet's would take any size, but fixed sizes measured no slower). An export is stored under
<cache>/<key>/dense.onnx, the key hashing what determines the graph: the weights (their SHA256 and any replaced
BatchNorm statistics), the feature kind, the input size, the torch version and this file's FORMAT; settings.json
beside it records those settings and the export's SHA256, and a graph is used only when both match (a file copied
in from other weights, or damaged, is exported again with one warning line; so is one that does not load); the
runtime compiles it at load (a fraction of a second).

A runtime is trusted only after a check at load: its depth on one generated image (check_image) equals PyTorch's
within CHECK_METRES (clip_runtime.FrozenCLIP.use_runtime runs it). Only fp32 and bf16 (OpenVINO's bf16 inference
precision, on CPUs with native bf16) run here; fp16 and GPUs keep PyTorch. The runtime is a speed-up: under
--runtime auto a graph that cannot be exported, loaded or run (a read-only cache, say) runs with PyTorch instead,
with one warning line; a runtime named by the user fails in one line instead.
"""
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from downloads import sha256_of_file
from files import write_file

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
AUTO_ORDER = ("onnxruntime", "openvino")  # --runtime auto tries these in turn. As fast as each other in fp32 on
# the AMD EPYC measured (docs/speed.md); ONNX Runtime first because OpenVINO crashed the test process in one
# pattern (a forked DataLoader worker failing, then a subprocess), and OpenVINO for bf16, which ONNX Runtime lacks
PACKAGES = {"openvino": "openvino onnx", "onnxruntime": "onnxruntime onnx"}  # runtime -> pip packages it needs
# (torch.onnx's exporter writes through the onnx package)
CHECK_METRES = 1e-4  # a runtime's depth may differ from PyTorch's by float rounding, no more. Measured on the
# tests' tiny random towers over smooth generated images: the paper's features (ResNet trunk) within 1.2e-6 m; the
# value, MaskCLIP and ViT kinds 5e-6 to 3e-5 m, from rounding alone, which the head multiplies by CLIP's logit scale
# over the temperature (1000x); a broken export (a wrong operation) moves depth by far more.
FORMAT = 2  # bump when what an export holds changes (2: settings.json records the export's SHA256)
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "depthclip", "graphs")


def check_image(rows, cols, seed=0):
    """(1, 3, rows, cols) a smooth generated image (seeded noise at 3x4, upsampled bilinearly), normalized-range
    values: the check's input, nearer a photograph's statistics than pixel noise."""
    coarse = torch.randn(1, 3, 3, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(rows, cols), mode="bilinear", align_corners=True)


def version(runtime):
    """The installed version of a runtime's package, or None if it is not installed; torch's for 'torch'."""
    if runtime == "torch":
        return torch.__version__
    if any(importlib.util.find_spec(package) is None for package in PACKAGES[runtime].split()):
        return None  # found without importing: a runtime is loaded only when it is used
    try:
        return importlib.metadata.version(runtime)
    except importlib.metadata.PackageNotFoundError:  # installed under another distribution's name (onnxruntime-gpu,
        # openvino-nightly): the one that provides the module, if any says so
        providers = importlib.metadata.packages_distributions().get(runtime)
        return importlib.metadata.version(providers[0]) if providers else "of unknown version"


class DenseFeatures(nn.Module):
    """The function a graph holds: (1, 3, H, W) normalized image -> (1, C, h, w) dense features of one kind."""

    def __init__(self, clip, kind):
        super().__init__()
        self.clip, self.kind = clip, kind

    def forward(self, image):
        return self.clip.encode_image_dense(image, self.kind)


class GraphTower:
    """Stands in for the CLIP where dense_patch_features asks for encode_image_dense and dtype: each (feature kind,
    input size) through its own compiled graph, one image per run (a CPU runs one view per pass anyway).

    runtime: 'openvino' or 'onnxruntime'; clip: the (frozen, BatchNorm folded) CLIP whose tower is exported;
    weights_id: what names its weights (FrozenCLIP.weights_id()); precision: 'fp32' or 'bf16' (OpenVINO only);
    cache_dir: where exports are kept. Raises ValueError when the runtime is not installed or cannot run the
    precision; graph() raises ValueError when an export cannot be made or loaded, unless fallback is set.
    """

    dtype = torch.float32

    def __init__(self, runtime, clip, weights_id, precision="fp32", cache_dir=None):
        if runtime not in AUTO_ORDER:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        self.version = version(runtime)
        if self.version is None:
            raise ValueError(f"--runtime {runtime} needs pip install {PACKAGES[runtime]} (not installed here); or use "
                             f"--runtime torch")
        if precision not in ("fp32", "bf16") or (precision == "bf16" and runtime != "openvino"):
            raise ValueError(f"--runtime {runtime} does not run --precision {precision}; use --runtime torch"
                             + (" or openvino" if precision == "bf16" else ""))
        self.runtime, self.clip, self.weights_id, self.precision = runtime, clip, weights_id, precision
        self.cache_dir = cache_dir or os.environ.get("DEPTHCLIP_GRAPH_CACHE", DEFAULT_CACHE)
        self.graphs = {}  # (kind, (H, W)) -> a callable on a (1, 3, H, W) float32 array
        self.digests = {}  # (kind, (H, W)) -> the SHA256 of the export that graph was compiled from
        self.exported = 0  # exports made in this process (not read from the cache): the tests count them
        self.fallback = False  # --runtime auto, once its check passed (FrozenCLIP.use_runtime): a graph that cannot
        # be exported, loaded or run then runs with PyTorch, with one warning line, instead of failing the run

    def encode_image_dense(self, images, features="trunk"):
        """(B, 3, H, W) -> (B, C, H/s, W/s) float32, on the CPU."""
        size = tuple(images.shape[-2:])
        arrays = [np.ascontiguousarray(image[None].float().numpy()) for image in images]
        try:
            outputs = [self.graph(features, size)(array) for array in arrays]
        except Exception as error:  # the runtime's own error types vary; ValueError from graph() says what failed
            if not self.fallback:
                raise
            self.use_pytorch(features, size, error)
            outputs = [self.graphs[features, size](array) for array in arrays]
        return torch.cat([torch.from_numpy(output) for output in outputs])

    def use_pytorch(self, kind, size, error):
        """Run (kind, size) with the CLIP's own encode_image_dense from now on, saying why in one line."""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"warning: {reason}; --runtime auto runs the image tower at {size[0]}x{size[1]} with PyTorch instead",
              file=sys.stderr)
        self.graphs[kind, size] = lambda image: self.clip.encode_image_dense(torch.from_numpy(image), kind).numpy()

    def key(self, kind, size):
        settings = {"weights": self.weights_id, "kind": kind, "size": list(size), "torch": torch.__version__,
                    "format": FORMAT}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20], settings

    def graph(self, kind, size):
        """The compiled graph for (kind, size), loaded at its first use. ValueError (one line naming the file or
        folder) when no export can be made or loaded."""
        if (kind, size) not in self.graphs:
            key, settings = self.key(kind, size)
            folder = os.path.join(self.cache_dir, key)
            path = os.path.join(folder, "dense.onnx")
            if not os.path.isfile(path):
                self.export(kind, size, folder, settings)
            fault = self.fault(folder, settings)
            if fault:
                self.export_again(path, fault, kind, size, folder, settings)
            try:
                run = self.compile(path)
            except Exception as error:  # a foreign file with a matching hash: the runtime's own error type varies
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                self.export_again(path, f"does not load ({type(error).__name__}: {reason})", kind, size, folder,
                                  settings)
                try:
                    run = self.compile(path)
                except Exception as error:
                    raise ValueError(f"the exported image tower {path} does not load even when exported again "
                                     f"({type(error).__name__}); use --runtime torch") from None
            self.graphs[kind, size] = run
        return self.graphs[kind, size]

    def fault(self, folder, settings):
        """None if folder's dense.onnx is the export its key names: settings.json beside it records these settings
        and the file's SHA256; else what is wrong with it, for a warning. Records the SHA256 in digests."""
        path = os.path.join(folder, "dense.onnx")
        recorded = self.recorded(folder)
        if recorded is None:
            return "has no readable settings.json beside it"
        other = [name for name in settings if recorded.get(name) != settings[name]]
        if other:
            return (f"was exported for another {', '.join(other)} (its settings.json: "
                    f"{', '.join(f'{name} {recorded.get(name)}' for name in other)})")
        try:
            digest = sha256_of_file(path)
        except OSError as error:
            return f"cannot be read ({error.strerror or error})"
        if digest != recorded.get("sha256"):
            return (f"is not the file exported there (its SHA256 is {digest[:16]}…, settings.json beside it records "
                    f"{str(recorded.get('sha256'))[:16]}…): replaced or damaged")
        self.digests[settings["kind"], tuple(settings["size"])] = digest
        return None

    @staticmethod
    def recorded(folder):
        """settings.json of an export folder as a dict, or None if it is missing or unreadable."""
        try:
            with open(os.path.join(folder, "settings.json")) as f:
                recorded = json.load(f)
        except (OSError, ValueError):
            return None
        return recorded if isinstance(recorded, dict) else None

    def export_again(self, path, fault, kind, size, folder, settings):
        """Replace a faulty export (one warning line); ValueError if it cannot be replaced (a read-only cache)."""
        print(f"warning: the exported image tower {path} {fault}; exporting it again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        self.export(kind, size, folder, settings)
        if self.fault(folder, settings):
            raise ValueError(f"the exported image tower {path} {fault} and cannot be replaced; delete {folder}, or set "
                             f"DEPTHCLIP_GRAPH_CACHE to a writable folder, or use --runtime torch")

    def check_record(self, kind, size):
        """Where the load-time check's result for this runtime (and version) on this export is kept, so that a later
        load runs no image tower for it (the check measures the tower; the head it was first read through turns
        feature differences into metres)."""
        key, _ = self.key(kind, size)
        return os.path.join(self.cache_dir, key, f"check-{self.runtime}-{self.version}.json")

    def recorded_check(self, kind, size):
        """The largest depth difference (m) the check found on this export, or None: none is kept, or it was kept
        for another export than the one settings.json beside it now records (a folder copied in from elsewhere)."""
        key, settings = self.key(kind, size)
        recorded = self.recorded(os.path.join(self.cache_dir, key))
        try:
            with open(self.check_record(kind, size)) as f:
                check = json.load(f)
            difference = float(check["largest_depth_difference_m"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none, or unreadable: check again
        if recorded is None or any(recorded.get(name) != value for name, value in settings.items()) or \
                check.get("export_sha256") != recorded.get("sha256"):
            return None
        return difference

    def record_check(self, kind, size, difference):
        """Keep the check's result beside the export it was measured on (nothing if the cache is read-only: the check
        then runs again next time)."""
        record = json.dumps({"largest_depth_difference_m": difference, "export_sha256": self.digests.get((kind, size))})
        try:
            write_file(self.check_record(kind, size), record.encode())
        except ValueError:
            pass

    def export(self, kind, size, folder, settings):
        """torch.onnx.export of DenseFeatures at this size into a temporary folder with a settings.json recording
        settings and the export's SHA256, renamed into place when whole (where processes race, the first rename wins
        and a folder in use is never replaced). ValueError naming the folder when it cannot be written."""
        staging = None
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            staging = tempfile.mkdtemp(dir=self.cache_dir, prefix=".export-")
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's notes on traced shapes
                torch.onnx.export(DenseFeatures(self.clip, kind).eval(), (torch.zeros(1, 3, *size),),
                                  os.path.join(staging, "dense.onnx"), opset_version=17, dynamo=False,
                                  input_names=["image"], output_names=["dense"])
            with open(os.path.join(staging, "settings.json"), "w") as f:
                json.dump({**settings, "sha256": sha256_of_file(os.path.join(staging, "dense.onnx"))}, f, indent=2)
            try:
                os.rename(staging, folder)
            except OSError:  # another process (a torchrun rank) put the same export there first: use theirs
                if not os.path.isfile(os.path.join(folder, "dense.onnx")):
                    raise
        except OSError as error:
            raise ValueError(f"the image tower cannot be exported into {self.cache_dir} "
                             f"({error.strerror or error}); set DEPTHCLIP_GRAPH_CACHE to a writable folder, or use "
                             f"--runtime torch") from None
        except Exception as error:  # an operation torch.onnx cannot express (some open_clip towers)
            raise ValueError(f"this image tower does not export to ONNX ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}); use --runtime torch") from None
        finally:
            if staging:
                shutil.rmtree(staging, ignore_errors=True)
        self.exported += 1

    def compile(self, path):
        """The runtime's compiled graph of an ONNX file -> a function of a (1, 3, H, W) float32 array."""
        threads = torch.get_num_threads()
        if self.runtime == "openvino":
            import openvino
            compiled = openvino.Core().compile_model(path, "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": threads})
            return lambda image: compiled(image)[0]
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # its threads' busy-waiting after a
        # run slowed the PyTorch work that follows (the head, the metrics, another loop) by 1.8x on 2 cores
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda image: session.run(None, {"image": image})[0]
