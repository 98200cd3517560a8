"""Playground: type depth words, watch the depth change. A Gradio page (pip install -r requirements-demo.txt).

    python demo.py [--clip_model RN50] [--port 7860] [--device auto]

An image goes through CLIP's image tower once per image and dense feature (both views, for the flip average);
any change of the words, bins, template, objects or temperature re-runs only the text tower and the head.
The page shows the depth (a colour bar in metres), each word's softmax weight per patch, each word's share of
the image, and offers the depth as a 16-bit PNG (millimetres, or 1/256 m past 65.535 m, as the page says) and a
coloured point cloud (.ply: x right, y down, z forward, metres). Images are read as predict.py reads them
(16-bit and float images scaled, transparency flattened over white).
"""
import dataclasses
import hashlib
import os
import tempfile

import numpy as np
import torch
from PIL import Image

import cli
import options
import photos
import rsa
import visualize
from clip_runtime import check_dense_features
from datasets.images import resolve_normalization
from datasets.nyu import IMAGE_SIZE
from learned_prompts import load_prompts, prompts_from
from monoclip import (BIN_SETS, FEATURES, PROMPT_SETS, TEMPERATURE, TEMPLATES, DepthPrompts, MonoCLIP,
                      prompt_softmax)

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")


def field(parse, text, name, problem):
    """A comma-separated page field read as its flag is (options.comma_list, options.numbers), or a ValueError."""
    try:
        return parse(text)
    except options.ListError as error:
        raise ValueError(f"{name} {text!r} {problem} ({error})") from None


class Playground:
    """The page's work without the page: image features kept per (image, feature), prompts encoded per edit."""

    def __init__(self, model, long_side=options.LONG_SIDE, normalize="imagenet", language=None):
        self.model, self.long_side, self.normalize = model, long_side, normalize
        self.language = language  # relative.Language with --scale_model: a caption sets the depth's scale (RSA)
        self.views = {}  # (image digest, features) -> (view features (2, hw, C), grid); the last few images
        self.image_passes = 0  # how often the image tower ran: once per image and feature
        self.folder = tempfile.mkdtemp(prefix="depthclip-demo-")
        self.notes = []  # what the last render changed that a user should know: flattened alpha, the PNG's scale
        self.learned = model.prompts if not isinstance(model.prompts, DepthPrompts) else None  # from --prompts

    def image_features(self, image, features):
        key = (hashlib.sha256(image.tobytes()).hexdigest(), features)
        if key not in self.views:
            check_dense_features(self.model.clip, features, self.model.clip_model)
            self.model.features = features
            x = photos.model_input(image, self.long_side, self.model.stride, self.normalize)
            self.views = {k: v for k, v in list(self.views.items())[-3:]}  # a few images, not every one
            self.views[key] = self.model.view_features(x, flip=True)
            self.image_passes += 1
        return self.views[key]

    def render(self, image, words, bins, template, objects, temperature, features, flip, focal, prompts_file=None,
               caption=""):
        """-> (depth picture, [(word's weight map, caption)], {word: share}, [depth PNG, point cloud PLY]);
        ValueError if the settings cannot run. With learned prompts (an uploaded prompts_file, or the model's own
        from --prompts) the words, bins, template and objects are theirs: the slots are shown by name, <depth i>.
        caption (with --scale_model): RSA's scale and shift from it put DepthCLIP's map, inverted, into metres
        (rsa.metric_depth, kind depth); the notes say the scale and shift."""
        if image is None:
            raise ValueError("upload an image first")
        image, flattened = photos.upright_rgb(image)
        if prompts_file or self.learned:
            prompts = load_prompts(prompts_file) if prompts_file else self.learned
            prompts = dataclasses.replace(prompts, temperature=float(temperature))
        else:
            prompts = DepthPrompts(field(options.comma_list, words, "depth words", "have an empty item"),
                                   field(options.numbers, bins, "bins", "are not comma-separated numbers of metres"),
                                   [template], field(options.comma_list, objects, "objects", "have an empty item"),
                                   float(temperature))
        if not focal or focal <= 0:
            raise ValueError(f"focal length {focal!r} must be a positive number of pixels")
        views, grid = self.image_features(image, features)
        encoded = self.model.encode_prompts(prompts)  # the text tower: the only CLIP work of an edit
        size = (image.height, image.width)
        with torch.inference_mode():
            depth = self.model.depth_from_features(views if flip else views[:1], grid, size, flip, encoded)
            weights = prompt_softmax(views[:1], grid, encoded)[0].float().cpu().numpy()  # (K, h, w)
        depth = depth[0, 0].float().cpu().numpy()
        rsa_note = []
        if self.language is not None and caption and caption.strip():
            scale, shift = self.language([caption])
            depth = rsa.metric_depth(torch.from_numpy(depth), scale.item(), shift.item(), "depth").numpy()
            rsa_note = [f"RSA: scale {scale.item():.4g}, shift {shift.item():.4g} from the caption "
                        f"(depth = 1 / (scale / DepthCLIP's depth + shift))"]
        rgb = np.asarray(image)
        shares = dict(zip(prompts.column_labels, weights.reshape(len(weights), -1).mean(axis=1).tolist()))
        shown = (image.width // 2, image.height // 2)
        maps = [(np.asarray(Image.fromarray(visualize.colorize(w, 0, 1, visualize.WEIGHTS_COLORMAP)).resize(
            shown, Image.NEAREST)), f"'{label}' ({b:g} m): {shares[label]:.0%}")
            for w, label, b in zip(weights, prompts.column_labels, prompts.column_bins)]
        png, ply = os.path.join(self.folder, "depth.png"), os.path.join(self.folder, "depth.ply")
        depth_png = visualize.depth_png(depth)
        cli.write_files({png: depth_png.data, ply: visualize.point_cloud_ply(depth, rgb, focal)})
        self.notes = ["transparency flattened over white"] * flattened + [
            note for note in [visualize.png_note("depth.png", depth_png)] if note] + rsa_note
        return visualize.depth_picture(depth), maps, shares, [png, ply]


def matching_preset(presets, text):
    """The name of the preset whose text this is, or 'custom'."""
    return next((name for name, value in presets.items() if value == text), CUSTOM)


CUSTOM = "custom"  # a preset dropdown's value once the field holds typed values


def build_page(playground):
    import gradio as gr

    def update(image, words, bins, template, objects, temperature, features, flip, focal, prompts_file, caption=""):
        if image is None:  # the image was cleared: nothing to show, nothing to complain about
            return None, [], None, None, ""
        try:
            shown = playground.render(image, words, bins, template, objects, temperature, features, flip, focal,
                                      prompts_file, caption)
        except ValueError as error:  # a readable message on the page, which stays usable
            raise gr.Error(cli.one_line(error)) from None
        return (*shown, "; ".join(playground.notes))

    presets = {name: ", ".join(words) for name, words in PROMPT_SETS.items()}
    bin_presets = {name: ", ".join(f"{b:g}" for b in values) for name, values in BIN_SETS.items()}
    features = [name for name, (dense, _) in FEATURES.items() if dense in playground.model.clip.dense_features]
    model_name = playground.model.clip_model
    model_name = os.path.basename(model_name) if os.path.isfile(model_name) else model_name  # no machine's paths
    with gr.Blocks(title="DepthCLIP playground") as page:
        gr.Markdown("# DepthCLIP playground\nType depth words and their depths: each patch's depth is the bins "
                    "weighted by CLIP's softmax over the words. A new image runs CLIP's image tower; an edit runs "
                    f"only its text tower (Enter in a field, or the button). Model: `{model_name}`.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", image_mode=None, label="image", sources=["upload"], elem_id="image")
                preset = gr.Dropdown([*presets, CUSTOM], value="paper", label="prompt preset", elem_id="preset")
                words = gr.Textbox(presets["paper"], label="depth words, nearest first", elem_id="words")
                bin_preset = gr.Dropdown([*bin_presets, CUSTOM], value="paper", label="bin preset",
                                         elem_id="bin_preset")
                bins = gr.Textbox(bin_presets["paper"], label="bins (m), one per word", elem_id="bins")
                template = gr.Textbox(TEMPLATES[0], label="template: {} object, then {} word", elem_id="template")
                objects = gr.Textbox("object", label="objects, comma-separated", elem_id="objects")
                temperature = gr.Number(TEMPERATURE, label="temperature", elem_id="temperature")
                feature = gr.Dropdown(features, value=features[0], label="dense features", elem_id="features")
                flip = gr.Checkbox(True, label="average with the mirrored image", elem_id="flip")
                focal = gr.Number(photos.default_focal(IMAGE_SIZE[0]),
                                  label="focal length (pixels) for the point cloud", elem_id="focal")
                learned = f" (now: {os.path.basename(playground.learned.source.get('file') or 'from --prompts')})" \
                    if playground.learned else ""
                prompts_file = gr.File(label=f"learned prompts (.safetensors from train.py or convert_prompts.py)"
                                       f"{learned}: they replace the words, bins, template and objects",
                                       file_types=[".safetensors"], type="filepath", elem_id="prompts_file")
                caption = gr.Textbox("", label="RSA: describe the scene (its scale model sets the depth's scale and "
                                     "shift, shown below)", elem_id="caption", visible=playground.language is not None)
                button = gr.Button("Update depth", variant="primary", elem_id="update")
            with gr.Column():
                depth = gr.Image(label="depth (metres)", elem_id="depth", format="png")
                weights = gr.Gallery(label="each word's softmax weight per patch (black 0, light 1) and its share "
                                     "of the image", elem_id="weights", columns=4, format="png")
                shares = gr.Label(label="share of the image per word", elem_id="shares")
                files = gr.File(label="depth as a uint16 PNG (millimetres unless said below) and point cloud (.ply)",
                                elem_id="files")
                notes = gr.Markdown(elem_id="notes")
        inputs = [image, words, bins, template, objects, temperature, feature, flip, focal, prompts_file, caption]
        outputs = [depth, weights, shares, files, notes]
        preset.input(lambda name, text: presets.get(name, text), [preset, words], words)  # custom: as typed
        bin_preset.input(lambda name, text: bin_presets.get(name, text), [bin_preset, bins], bins)
        words.change(lambda text: matching_preset(presets, text), words, preset)
        bins.change(lambda text: matching_preset(bin_presets, text), bins, bin_preset)
        new_image = image.change(lambda img: photos.default_focal(img.width if img else IMAGE_SIZE[0]), image,
                                 focal)
        new_image.then(update, inputs, outputs)  # an upload or a clicked example computes by itself
        for trigger in (button.click, words.submit, bins.submit, template.submit, objects.submit,
                        temperature.submit, focal.submit, feature.input, flip.input, prompts_file.change,
                        caption.submit):
            trigger(update, inputs, outputs)
        if os.path.isdir(EXAMPLES):
            gr.Examples(sorted(os.path.join(EXAMPLES, f) for f in os.listdir(EXAMPLES)), inputs=image)
    return page


def main(argv=None):
    p = options.demo_options()
    args = p.parse_args(argv)
    options.check_model_arguments(p, args)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise RuntimeError("the playground needs gradio: pip install -r requirements-demo.txt") from None
    model = MonoCLIP.from_settings(args, prompts_from(vars(args)))
    language = None
    if args.scale_model:
        import relative
        language = relative.Language(args.scale_model, model.backbone)
    build_page(Playground(model, args.long_side, resolve_normalization(args.normalize, model), language)).launch(
        server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    cli.run(main)
