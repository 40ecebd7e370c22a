"""The bundled example: a small CNN (a residual block and a concat) trained on hand-written
digits, with a calibration split and a held-out test split.

Data: the UCI Optical Recognition of Handwritten Digits dataset (E. Alpaydin, C. Kaynak,
1998; https://archive.ics.uci.edu/dataset/80, CC BY 4.0), 8x8 version as shipped by
scikit-learn (`sklearn.datasets.load_digits`). The model and the data files are produced by
`scripts/train_digits_example.py` in the repository (deterministic, numpy only).

    from oxiquant import examples
    model = oxiquant.load(examples.DIGITS_MODEL)
    data = examples.digits_data()   # calib_images, calib_labels, test_images, test_labels
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIGITS_MODEL = HERE / "digits_cnn.onnx"
DIGITS_DATA = HERE / "digits.npz"
DIGITS_ATTRIBUTION = (
    "Example: a small CNN trained on the UCI Optical Recognition of Handwritten Digits dataset\n"
    "(E. Alpaydin, C. Kaynak, 1998, CC BY 4.0; 8x8 version from scikit-learn's load_digits)."
)


def digits_data() -> dict[str, np.ndarray]:
    """The example's data: `calib_images` (200 training images) and `test_images` (600
    held-out images) as float32 [N, 1, 8, 8] in [0, 1] (pixel / 16), and their labels as
    int64."""
    with np.load(DIGITS_DATA) as d:
        return {
            k: d[k].astype(np.float32) if k.endswith("images") else d[k].astype(np.int64)
            for k in ("calib_images", "calib_labels", "test_images", "test_labels")
        }
