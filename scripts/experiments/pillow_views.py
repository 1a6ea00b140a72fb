"""The engine's preprocessing done with Pillow, for the reference experiments beside this file:
shorter side to the model's `shorter_side`, centre crop to the input size, normalized with the
model's mean and std (NHWC float32). Pillow's bilinear filter is not the engine's antialiased one,
so figures differ from `covergenre evaluate` by a few tenths of a point; the experiments compare
variants made the same way."""
import numpy as np


def normalized(image, pre):
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    return (np.asarray(image, np.float32) / 255.0 - mean) / std


def centre_crop(image, pre, size=224):
    from PIL import Image

    w, h = image.size
    scale = pre["shorter_side"] / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR, reducing_gap=None)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return normalized(image.crop((left, top, left + size, top + size)), pre)


def whole(image, pre, size=224):
    """The whole cover squashed to size x size: nothing cut from its edges."""
    from PIL import Image

    return normalized(image.resize((size, size), Image.BILINEAR, reducing_gap=None), pre)


def open_rgb(path):
    from PIL import Image

    return Image.open(path).convert("RGB")
