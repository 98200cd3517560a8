"""Photos from the wild into the model and back: what predict.py, the playground and torch.hub's transform share.

A photo of any size and mode (EXIF orientation applied; 16-bit, float and transparent images read as a viewer
shows them, datasets.images.to_rgb) is resized bicubically so its long side is `long_side` and both sides are
multiples of the model's stride, normalized, and its depth (flip-averaged, as evaluated) upsampled back to the
photo's own size.
"""

from PIL import Image, ImageOps

from datasets import normalized, open_image, to_rgb
from datasets.images import model_input_size
from datasets.nyu import FOCAL, IMAGE_SIZE, INPUT_SIZE

LONG_SIDE = INPUT_SIZE[1]  # a photo's long side by default, as NYU's evaluated crop (544 pixels)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_photo(path):
    """(upright 8-bit RGB PIL image, whether transparency was flattened) from an image file; DataError (one line
    naming the file and the reason) for anything that is not a readable image."""
    return upright_rgb(open_image(path), path)


def upright_rgb(image, name="image"):
    """A PIL image of any mode -> (upright 8-bit RGB image, whether transparency was flattened over white)."""
    return to_rgb(ImageOps.exif_transpose(image), name)


def model_input(image, long_side, stride, normalize):
    """PIL RGB image -> (1, 3, h, w): resized bicubically to model_input_size, normalized."""
    size = model_input_size(*image.size, long_side, stride)
    return normalized(image.resize(size, Image.BICUBIC), normalize)[None]


def predict_depth(model, image, long_side, normalize, flip=True):
    """PIL RGB image -> (H, W) float32 metres at the image's own size."""
    x = model_input(image, long_side, model.stride, normalize)
    depth = model.predict(x, flip=flip, size=(image.height, image.width))  # (1, 1, H, W)
    return depth[0, 0].float().cpu().numpy()


def default_focal(width):
    """NYU's colour camera's focal length (pixels), scaled to an image `width` pixels wide."""
    return FOCAL * width / IMAGE_SIZE[0]


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)
