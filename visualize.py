"""Pictures of depth: eval.py's per-image panels and bin responses, predict.py's coloured depth maps.

Depth is drawn with viridis (perceptually uniform, never black), so black means "no ground truth".
Every file is written to a temporary name and renamed, so an interrupted run leaves no broken picture.
"""
import io
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, PngImagePlugin  # noqa: E402

import files  # noqa: E402
from datasets.nyu import paste_into_frame  # noqa: E402
from datasets.images import MIN_DEPTH  # noqa: E402
from datasets.nyu import PASTE_BOX  # noqa: E402

COLORMAP = "viridis"
BAR_HEIGHT = 28  # the labelled colour bar under a depth picture
TITLE_HEIGHT = 20  # the column titles over a panel
MIN_COLOR_SPAN = 0.5  # metres: the narrowest depth range a colour picture spreads over the whole colormap


def save_png(path, array):
    """A uint8 or uint16 array as PNG, atomically."""
    files.write_file(path, png_bytes(array))


def figure_png(figure):
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


PNG_SCALES = (1000.0, 256.0)  # 16-bit depth PNG units per metre: NYU's millimetres (to 65.535 m), else KITTI's
# 1/256 m (to 255.99 m); the scale is written into the PNG (text chunk "depth_scale") and said where it is not mm


class DepthPNG(NamedTuple):
    data: bytes  # the PNG file
    scale: float  # units per metre
    clipped: float  # share of pixels beyond 65535 units, stored as 65535


def depth_png(depth):
    """(H, W) metres -> DepthPNG: uint16 depth x scale, the scale the first of PNG_SCALES that holds the largest
    depth; beyond 255.99 m the excess is clipped and its share reported, never silently."""
    depth = np.nan_to_num(np.asarray(depth, np.float64), nan=0.0)
    largest = float(depth.max()) if depth.size else 0.0
    scale = next((s for s in PNG_SCALES if round(largest * s) <= 65535), PNG_SCALES[-1])
    units = np.round(depth * scale)
    clipped = float(np.mean(units > 65535)) if units.size else 0.0
    info = PngImagePlugin.PngInfo()
    info.add_text("depth_scale", f"{scale:g}")  # units per metre
    buffer = io.BytesIO()
    Image.fromarray(np.clip(units, 0, 65535).astype(np.uint16)).save(buffer, format="PNG", pnginfo=info)
    return DepthPNG(buffer.getvalue(), scale, clipped)


def png_note(path, png):
    """One line for a depth PNG that is not in millimetres or lost values; None when it is plain millimetres."""
    if png.clipped:
        return (f"warning: {path}: {png.clipped:.1%} of the pixels are beyond 255.99 m and were stored as 255.99 m; "
                f"the .npy output (predict.py --npy) holds them exactly")
    if png.scale != 1000.0:
        return f"note: {path} holds depth x {png.scale:g} (depth beyond 65.535 m does not fit millimetres)"
    return None


def prediction_png(pred):
    """(416, 544) metres -> DepthPNG at 640x480, zeros outside the evaluated crop: in mm, re-scorable as NYU GT."""
    return depth_png(paste_into_frame(torch.as_tensor(pred)[None, None])[0, 0])  # (480, 640)


def colorize(depth, vmin, vmax, colormap=COLORMAP):
    """(H, W) values (metres) -> (H, W, 3) uint8 with the colormap; NaN (missing) black."""
    scaled = (np.asarray(depth, np.float64) - vmin) / max(vmax - vmin, 1e-6)
    colours = plt.get_cmap(colormap)(np.clip(scaled, 0, 1))[..., :3]
    colours[np.isnan(scaled)] = 0
    return (colours * 255).round().astype(np.uint8)


def scale_bar(width, vmin, vmax):
    """(BAR_HEIGHT, width, 3) uint8: the colormap from vmin (near) to vmax (far) metres, labelled at both ends."""
    bar = np.full((BAR_HEIGHT, width, 3), 255, np.uint8)
    third = max(width // 3, 1)
    bar[4:16, third:third + third] = colorize(np.linspace(vmin, vmax, third)[None].repeat(12, 0), vmin, vmax)
    image = Image.fromarray(bar)
    draw = ImageDraw.Draw(image)
    draw.text((max(third - 80, 0), 4), f"near {vmin:.2f} m", fill=(0, 0, 0))
    draw.text((min(2 * third + 6, width - 76), 4), f"{vmax:.2f} m far", fill=(0, 0, 0))
    return np.asarray(image)


def title_strip(width, text):
    """(TITLE_HEIGHT, width, 3) uint8: text on white, left-aligned (characters the font lacks shown as '?')."""
    image = Image.new("RGB", (width, TITLE_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(image).text((4, 4), text.encode("latin-1", "replace").decode("latin-1"), fill=(0, 0, 0))
    return np.asarray(image)


def titles(widths, names):
    """(TITLE_HEIGHT, sum(widths), 3) uint8: a white strip with each column's name centred over it."""
    image = Image.new("RGB", (sum(widths), TITLE_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left = 0
    for width, name in zip(widths, names):
        draw.text((left + width // 2 - 3 * len(name), 4), name, fill=(0, 0, 0))
        left += width
    return np.asarray(image)


def save_panel(path, rgb, pred, gt):
    """Titled columns RGB crop | prediction | ground truth at full resolution, the two depths on one colour
    scale, a labelled colour bar below.

    rgb (416, 544, 3) uint8, pred (416, 544) m, gt (480, 640) m with 0 where missing; gt is shown over the
    same crop. The scale runs from 0 to the larger of the two maxima.
    """
    top, bottom, left, right = PASTE_BOX
    gt = np.asarray(gt, np.float64)[top:bottom, left:right]
    gt = np.where(gt > MIN_DEPTH, gt, np.nan)
    pred = np.asarray(pred, np.float64)
    vmax = max(float(pred.max()), float(np.nanmax(gt)) if np.isfinite(gt).any() else 0.0)
    columns = [rgb, colorize(pred, 0, vmax), colorize(gt, 0, vmax)]
    header = titles([c.shape[1] for c in columns], ["RGB (evaluated crop)", "prediction", "ground truth (black: none)"])
    panel = np.concatenate(columns, axis=1)  # (416, 1632, 3)
    save_png(path, np.concatenate([header, panel, scale_bar(panel.shape[1], 0, vmax)], axis=0))


WEIGHTS_COLORMAP = "magma"  # softmax weights, 0 (black) to 1 (light)


def bin_weights_png(rgb, weights, labels, bins):
    """PNG bytes: the image and, per depth prompt, its softmax weight over the h x w patches (0 to 1).

    rgb (H, W, 3) uint8, weights (K, h, w), labels and bins: K prompt names and their depths (m).
    """
    weights = np.asarray(weights)
    columns = 4
    rows = -(-(len(labels) + 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(rgb)
    axes[0].set_title("RGB")
    for ax, weight, label, depth in zip(axes[1:], weights, labels, bins):
        shown = ax.imshow(weight, cmap=WEIGHTS_COLORMAP, vmin=0, vmax=1)
        ax.set_title(f"'{label}' ({depth:g} m)")
    for ax in axes:
        ax.axis("off")
    figure.colorbar(shown, ax=axes.tolist(), fraction=0.02, pad=0.01, label="softmax weight")
    return figure_png(figure)


def color_range(depth, min_span=MIN_COLOR_SPAN):
    """(vmin, vmax) metres: the depth's own 2nd to 98th percentile (a 1-3 m prediction uses the whole colormap),
    widened about its centre to at least min_span metres, so that a flat prediction looks flat."""
    vmin, vmax = (float(v) for v in np.percentile(depth, [2, 98]))
    if vmax - vmin < min_span:
        centre = (vmin + vmax) / 2
        vmin, vmax = centre - min_span / 2, centre + min_span / 2
    return vmin, vmax


def depth_picture(depth, title=None, min_span=MIN_COLOR_SPAN):
    """(H, W) metres -> (H + BAR_HEIGHT, W, 3) uint8 (+ TITLE_HEIGHT rows with a title): coloured over
    color_range, a colour bar in metres below, near at its left end and far at its right."""
    vmin, vmax = color_range(depth, min_span)
    rows = [colorize(depth, vmin, vmax), scale_bar(depth.shape[1], vmin, vmax)]
    if title:
        rows.insert(0, title_strip(depth.shape[1], title))
    return np.concatenate(rows, axis=0)


def png_bytes(array):
    """A uint8 or uint16 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def point_cloud_ply(depth, rgb, focal, centre=None):
    """Binary PLY bytes: each pixel back-projected through a pinhole camera, x = (u - cx) z / f, y = (v - cy) z / f,
    z = depth (metres), coloured by the image. depth (H, W), rgb (H, W, 3) uint8, focal in pixels, centre (cx, cy)
    (default the image's centre)."""
    depth = np.asarray(depth, np.float32)
    h, w = depth.shape
    cx, cy = centre or ((w - 1) / 2, (h - 1) / 2)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    points = np.empty(h * w, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                    ("blue", "u1")])
    points["x"], points["y"], points["z"] = ((u - cx) * depth / focal).ravel(), ((v - cy) * depth / focal).ravel(), \
        depth.ravel()
    for channel, name in enumerate(("red", "green", "blue")):
        points[name] = np.asarray(rgb)[..., channel].ravel()
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex {}\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    return header.format(h * w).encode() + points.tobytes()
