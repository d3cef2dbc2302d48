"""Image classification data from a folder of class subfolders (``root/cat/*.png``, ``root/dog/*.jpg``).

Classes are the subfolder names in sorted order (label i = the i-th name); images are decoded with
Pillow (PNG and JPEG only), converted to ``data_options.image_mode`` (``"RGB"`` by default, or
``"L"`` for grey) and scaled to [0, 1]: the result is (N, C, H, W) float32. Every image must
have one size unless ``data_options.image_size = [H, W]`` resizes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.examples import Examples, checked
from zoo.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
MODES = {"RGB": 3, "L": 1}
MAX_PIXELS = 1 << 24  # per image: larger is a decompression bomb here, not a dataset


def _options(options: Mapping[str, Any]) -> tuple[str, tuple[int, int] | None]:
    mode = options.get("image_mode", "RGB")
    if mode not in MODES:
        raise DataError(f"data_options.image_mode must be one of {', '.join(MODES)}, not {mode!r}")
    size = options.get("image_size")
    if size is None:
        return mode, None
    ok = isinstance(size, list | tuple) and len(size) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in size):
        raise DataError(f"data_options.image_size must be [height, width] in pixels (1..4096), not {size!r}")
    return mode, (int(size[0]), int(size[1]))


def read_image_folder(root: Path, options: Mapping[str, Any]) -> Examples:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("image folders need Pillow: pip install 'zoo[images]'") from None
    mode, size = _options(options)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: an image folder holds one subfolder per class (at least two), found {classes}")
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{root / name}: no .png or .jpg images in this class folder")
        for file in files:
            array = _decode(Image, file, mode, size)
            if first is None:
                first = (file, array.shape[1:])
            elif array.shape[1:] != first[1]:
                raise DataError(
                    f"{file}: {array.shape[2]}x{array.shape[1]} pixels, but {first[0]} is "
                    f"{first[1][1]}x{first[1][0]}; resize them, or set data_options.image_size = [H, W]"
                )
            pixels.append(array)
            labels.append(label)
    return checked(root, np.stack(pixels), np.asarray(labels), classes)


def _decode(image_module: Any, file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]; any decoding problem is one `DataError` naming the file."""
    try:
        with image_module.open(file, formats=FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{file}: {img.width}x{img.height} pixels is too large for a training image")
            img = img.convert(mode)
            if size is not None:
                img = img.resize((size[1], size[0]))
            array = np.asarray(img, dtype=np.float32) / 255.0
    except DataError:
        raise
    except Exception as err:  # Pillow raises many types for broken or unsupported files
        raise DataError(f"{file}: not a readable PNG or JPEG image ({type(err).__name__}: {err})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
