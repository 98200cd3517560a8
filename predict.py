"""Depth for your own photos with DepthCLIP: one image or a folder of them.

    python predict.py photo.jpg                       # -> photo_depth.png (uint16) and photo_depth_color.png
    python predict.py photos/ -o depth/ --prompt_set prompt2 --clip_model /path/RN50.pt --npy

Each image (any size or mode; EXIF orientation applied; 16-bit and float images scaled, transparency flattened
over white) is resized so its long side is --long_side and both sides are multiples of the model's stride,
normalized, flip-averaged as in the evaluation, and its depth upsampled back to the photo's own size (photos.py).
Outputs per image, <name> being its file's stem (or, where two inputs share a stem, its whole file name):
    <name>_depth.png        uint16 depth in millimetres, or in 1/256 m when the depth passes 65.535 m (the
                            scale is in the PNG's "depth_scale" text chunk and said on the terminal)
    <name>_depth_color.png  the depth coloured, titled with the file and its range, near/far on the colour bar
    <name>_depth.npy        --npy: float32 metres, exact
    <name>_depth.ply        --ply: a coloured point cloud (x right, y down, z forward, metres)
Nothing is replaced that this run did not write, unless --overwrite; a folder's entries that are not images are
skipped with a warning each and the run exits 1 at the end. Nothing is trained: the numbers are CLIP's guesses
in the bins' range (1 to 3 m with the paper's bins).
"""
import collections
import contextlib
import io
import os
import sys

import numpy as np
from tqdm import tqdm

import cli
import options
import photos
import relative
import visualize
from datasets import DataError
from datasets.images import resolve_normalization
from learned_prompts import prompts_from
from monoclip import MonoCLIP

OUTPUTS = {"png": "_depth.png", "color": "_depth_color.png", "npy": "_depth.npy", "ply": "_depth.ply"}

FILES_LISTED = 12  # output files named in the closing line; beyond, their count


def is_output(name):
    return name.endswith(tuple(OUTPUTS.values()))


def find_inputs(path):
    """[image paths] for a file, or a folder's image-named entries (sorted; this tool's outputs left out); a
    ValueError for a path that is neither or a folder that holds none."""
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path) if photos.is_image_name(name) and not is_output(name))
        if not names:
            raise ValueError(f"{path} holds no image ({', '.join(photos.IMAGE_EXTENSIONS)}; this tool's own "
                             f"*_depth*.png outputs are not inputs)")
        return [os.path.join(path, name) for name in names]
    if not os.path.lexists(path):
        raise ValueError(f"{path} does not exist; give an image file or a folder of images")
    return [path]


def output_names(inputs):
    """{input: its name stem}: the file's stem, or its whole file name where stems would collide, so that no two
    inputs ever write the same outputs."""
    names = {path: os.path.splitext(os.path.basename(path))[0] for path in inputs}
    while True:
        counts = collections.Counter(names.values())
        clashing = [path for path, name in names.items() if counts[name] > 1 and name != os.path.basename(path)]
        if not clashing:
            return names
        for path in clashing:  # whole file names are unique in a folder
            names[path] = os.path.basename(path)


def planned_outputs(inputs, folder, kinds):
    """{input: {kind: output path}} for the wanted kinds of OUTPUTS."""
    names = output_names(inputs)
    return {path: {kind: os.path.join(folder or os.path.dirname(path), names[path] + OUTPUTS[kind]) for kind in kinds}
            for path in inputs}


def npy_bytes(depth):
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, np.float32), allow_pickle=False)
    return buffer.getvalue()


def main(argv=None):
    p = options.predict_options()
    args = p.parse_args(argv)
    options.check_model_arguments(p, args)
    options.check_predict_relative(p, args)
    if args.focal is not None and args.focal <= 0:
        p.error("--focal must be a positive number of pixels")
    if args.min_color_span <= 0:
        p.error("--min_color_span must be a positive number of metres")

    inputs = find_inputs(args.input)
    kinds = ["png", "color"] + ["npy"] * args.npy + ["ply"] * args.ply
    plan = planned_outputs(inputs, args.output, kinds)
    existing = [out for outs in plan.values() for out in outs.values() if os.path.lexists(out)]
    if existing and not args.overwrite:
        raise ValueError(f"{len(existing)} output file(s) already exist (first: {existing[0]}); pass --overwrite to "
                         f"replace them, or -o DIR to write elsewhere")
    written, skipped, flattened, wrote = 0, [], 0, []
    with cli.output_dir(args.output, "--output_dir") if args.output else contextlib.nullcontext():
        depthclip = not args.relative or args.relative[0] == options.RELATIVE_DEPTHCLIP  # --relative npy: no DepthCLIP
        model = MonoCLIP.from_settings(args, prompts_from(vars(args))) if depthclip else None
        normalize = resolve_normalization(args.normalize, model) if depthclip else None
        alignment = relative.PhotoAlignment(args, model) if args.relative else None
        if alignment:
            print(f"RSA: scale {alignment.scale:.6g}, shift {alignment.shift:.6g} from the caption {args.caption!r} "
                  f"(depth = 1 / (scale * r + shift))")
        for path in tqdm(inputs, desc="predict", unit="image", disable=len(inputs) == 1):
            try:
                image, had_alpha = photos.read_photo(path)
            except DataError as error:
                if len(inputs) == 1:
                    raise
                tqdm.write(f"warning: skipped: {error}", file=sys.stderr)
                skipped.append(path)
                continue
            flattened += had_alpha
            depth = photos.predict_depth(model, image, args.long_side, normalize, flip=not args.no_flip) if model \
                else None
            if alignment:
                depth = alignment.depth(path, image, depth, single=len(inputs) == 1)
            outs = plan[path]
            png = visualize.depth_png(depth)
            title = f"{os.path.basename(path)}: {depth.min():.2f}-{depth.max():.2f} m"
            files = {outs["png"]: png.data,
                     outs["color"]: visualize.png_bytes(visualize.depth_picture(depth, title, args.min_color_span))}
            if args.npy:
                files[outs["npy"]] = npy_bytes(depth)
            if args.ply:
                focal = args.focal or photos.default_focal(image.width)
                files[outs["ply"]] = visualize.point_cloud_ply(depth, np.asarray(image), focal)
            cli.write_files(files, "--output_dir" if args.output else "the image's folder")
            wrote += list(files)
            note = visualize.png_note(outs["png"], png)
            if note:
                tqdm.write(note, file=sys.stderr)
            written += 1
    where = args.output or os.path.dirname(os.path.abspath(inputs[0]))
    names = [os.path.relpath(path, where) for path in wrote]
    shown = ", ".join(names[:FILES_LISTED]) + (f" and {len(names) - FILES_LISTED} more" if len(names) > FILES_LISTED
                                                else "")
    print(f"{written} depth map(s) written to {where}" + (f": {shown}" if names else "")
          + (f"; transparency flattened over white in {flattened}" if flattened else ""))
    if skipped:
        print(f"error: {len(skipped)} of {len(inputs)} entries skipped, not images (each named above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
