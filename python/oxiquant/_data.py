"""Data for the command line: arrays from .npy/.npz files and image folders.

A DATA argument is one of
  - `FILE.npy`: one array [N, ...];
  - `FILE.npz` or `FILE.npz:KEY`: one array of an npz archive (the key may be omitted when the
    archive holds one array);
  - a folder of images (PNG, JPEG, BMP, ...; found recursively, sorted by path), preprocessed
    by `Preprocess`. With class sub-folders (`DATA/cat/1.jpg`, `DATA/dog/2.jpg`), the labels
    are the index of the sub-folder in sorted order.

Floating-point arrays are converted to the model's input type (e.g. float16 -> float32);
integer arrays are refused for float inputs: preprocess them into the range the model was
trained on first, or use an image folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from oxiquant._errors import InvalidArgumentError, ShapeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(InvalidArgumentError):
    """A DATA or LABELS argument that cannot be read."""


def _split_npz(spec: str) -> tuple[Path, Optional[str]]:
    if ".npz:" in spec:
        path, key = spec.rsplit(":", 1)
        return Path(path), key
    return Path(spec), None


def load_array(spec: str, limit: Optional[int] = None, what: str = "data") -> np.ndarray:
    """The array named by `spec` (FILE.npy, FILE.npz or FILE.npz:KEY), first `limit` rows."""
    path, key = _split_npz(spec)
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.suffix == ".npy":
        if key is not None:
            raise DataError(f"{what}: a key (':{key}') only applies to .npz files")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{what}: cannot read {path} as a .npy file ({e})") from None
    elif path.suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{what}: cannot read {path} as a .npz file ({e})") from None
        with archive:
            keys = list(archive.files)
            if key is None:
                if len(keys) != 1:
                    raise DataError(f"{what}: {path} holds {len(keys)} arrays {keys}; pick one with {path}:KEY")
                key = keys[0]
            if key not in keys:
                raise DataError(f"{what}: {path} has no array '{key}' (it has: {', '.join(keys)})")
            arr = archive[key]
    else:
        raise DataError(f"{what}: expected a .npy file, a .npz file or a folder of images, got {path}")
    if limit is not None:
        arr = arr[:limit]
    return np.asarray(arr)


@dataclass
class Preprocess:
    """How an image file becomes a model input (the defaults are ImageNet's usual ones).

    1. decode, convert to RGB (or grey when `channels` is 1);
    2. resize so that the shorter side is `resize` pixels (bilinear);
    3. crop the centre `crop` x `crop` pixels;
    4. scale pixels to [0, 1] (divide by 255), then (x - mean) / std per channel;
    5. lay out as `layout` ("nchw" or "nhwc"), float32.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    layout: str = "nchw"
    channels: int = 3

    def check(self) -> None:
        if self.layout not in ("nchw", "nhwc"):
            raise InvalidArgumentError(f"--layout must be nchw or nhwc, got {self.layout!r}")
        if self.channels not in (1, 3):
            raise InvalidArgumentError(f"image folders need a model input with 1 or 3 channels, not {self.channels}")
        if self.resize < 1 or self.crop < 1:
            raise InvalidArgumentError("--resize and --crop must be positive")
        if self.crop > self.resize:
            raise InvalidArgumentError(f"--crop {self.crop} is larger than --resize {self.resize}")
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if len(vals) not in (1, self.channels):
                raise InvalidArgumentError(f"--{name} needs 1 or {self.channels} values, got {len(vals)}")
        if any(s == 0 for s in self.std):
            raise InvalidArgumentError("--std values must be non-zero")

    def apply(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                w, h = im.size
                s = self.resize / min(w, h)
                im = im.resize((max(self.crop, round(w * s)), max(self.crop, round(h * s))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                im = im.crop((left, top, left + self.crop, top + self.crop))
                x = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        if x.ndim == 2:
            x = x[:, :, None]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x.transpose(2, 0, 1) if self.layout == "nchw" else x


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def folder_labels(folder: Path, files: list[Path]) -> np.ndarray:
    """Class index of each file: its top-level sub-folder's rank in sorted order."""
    tops = [f.relative_to(folder).parts for f in files]
    if any(len(p) < 2 for p in tops):
        raise DataError(f"labels from {folder}: every image must sit in a class sub-folder (e.g. {folder}/cat/1.jpg)")
    classes = sorted({p[0] for p in tops})
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[p[0]] for p in tops], dtype=np.int64)


def load_images(folder: Path, prep: Preprocess, limit: Optional[int] = None) -> tuple[np.ndarray, list[Path]]:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError(
            "reading image folders needs Pillow: pip install 'oxiquant[images]' (or pip install pillow)"
        ) from None
    prep.check()
    files = image_files(folder)[:limit]
    return np.stack([prep.apply(f) for f in files]), files


def load_data(spec: str, prep: Optional[Preprocess], limit: Optional[int], what: str) -> tuple[np.ndarray, Any]:
    """(array, source) for a DATA argument; `source` is the list of files for a folder."""
    path = Path(spec)
    if path.is_dir():
        if prep is None:
            raise DataError(f"{what}: {path} is a folder, but this model's input is not an image")
        return load_images(path, prep, limit)
    return load_array(spec, limit, what), None


def as_model_input(arr: np.ndarray, name: str, dtype: np.dtype, shape: Optional[list[Any]], what: str) -> np.ndarray:
    """Checks rank and static dims, converts floating-point data to the input's dtype."""
    if arr.dtype != dtype:
        if np.issubdtype(arr.dtype, np.floating) and np.issubdtype(dtype, np.floating):
            arr = arr.astype(dtype)
        else:
            raise ShapeError(
                f"{what} is {arr.dtype} but input '{name}' expects {dtype}: preprocess the data into the "
                "model's input range and type first (or give a folder of images)"
            )
    if shape is not None:
        if arr.ndim != len(shape):
            raise ShapeError(
                f"{what} has shape {list(arr.shape)}, input '{name}' has rank {len(shape)} {shape} "
                "(the first axis of the data is the sample axis)"
            )
        for i, d in enumerate(shape[1:], 1):
            if isinstance(d, int) and arr.shape[i] != d:
                raise ShapeError(f"{what} has shape {list(arr.shape)}, input '{name}' expects {shape}")
    if len(arr) == 0:
        raise ShapeError(f"{what} holds no samples")
    return np.ascontiguousarray(arr)
