"""Post-training quantization: the one-liner `quantize_network` and the step-by-step API.

The steps edit the model in place (as in Aidge's module; use `model.copy()` to keep the
original) and must run in this order:

    prepare_network(m)
    equalize_layers(m)                                              # optional
    exclude_layers(m, names)                                        # optional
    split_outlier_channels(m, calibration_set)                      # optional
    insert_scaling_nodes(m)
    normalize_parameters(m, per_channel=...)
    compute_ranges(m, calibration_set)
    adjust_ranges(m, clipping=..., nb_bits=..., optimize_signs=...)
    normalize_activations(m)
    round_weights(m, weight_bits, gptq=..., bias_correction=...)   # optional
    quantize_normalized_network(m, nb_bits, optimize_signs=..., ...)

`quantize_network` runs exactly these on a copy and returns it. The steps' defaults are
those of `quantize_network`'s "best" preset (per-channel weights, MSE clipping, unsigned ranges
where provable); `preset="aidge"` there, or per_channel=False, clipping="max" and
optimize_signs=False here, give the seed's behaviour.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

import numpy as np

from oxiquant._errors import InvalidArgumentError, ShapeError
from oxiquant._native import CLIPPING_METHODS as native_clipping_methods
from oxiquant._native import check_quantize_options, get_num_threads
from oxiquant.model import QDQ_MIN_OPSET, Model

CalibrationSet = Union[np.ndarray, Mapping[str, np.ndarray], Iterable[Any]]

# The activation clipping methods (the core's list; it checks every argument).
CLIPPING_METHODS: tuple[str, ...] = tuple(native_clipping_methods)


def prepare_network(model: Model) -> dict[str, int]:
    """Step 1: folds constants and BatchNormalization, removes Identity/Dropout, and lists
    the nodes that will stay in float (`model.quant_info["float_nodes"]`). Returns counts of
    what changed.

    A model below ai.onnx opset 13 is first converted to opset 13 with
    `onnx.version_converter` (a warning says so): the QDQ and QOperator exports need
    per-channel QuantizeLinear, which opset 13 introduced."""
    model._raise_opset(QDQ_MIN_OPSET)
    return dict(model._native.ptq_prepare())


def equalize_layers(model: Model, *, max_sweeps: int = 100, tolerance: float = 1e-4) -> dict[str, Any]:
    """Step 1b (optional, after `prepare_network`): cross-layer equalization. Divides each
    output channel of a Conv/Gemm by a factor and multiplies the matching input channel of
    the layers reading it by the same factor, through Relu, LeakyRelu, pooling, residual
    Adds and Concats, so that the float function is unchanged and each layer's channels
    span similar weight ranges (what per-tensor weight scales need). Layers whose outputs
    meet at an Add share one factor per channel; a depthwise Conv passes its channels' factors
    through. A Clip with an upper bound (ReLU6) stops it: its bound would have to become one
    per channel. Returns (and keeps in `model.quant_info["equalization"]`) the number of
    groups and channels equalized, the channels pinned at 1, the sweeps run and, per layer,
    its smallest over largest channel range before and after."""
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, (int, np.integer)) or max_sweeps < 1:
        raise InvalidArgumentError(f"max_sweeps must be a positive integer, got {max_sweeps!r}")
    if not isinstance(tolerance, (int, float, np.floating)) or not tolerance > 0:
        raise InvalidArgumentError(f"tolerance must be a positive number, got {tolerance!r}")
    return dict(model._native.ptq_equalize(int(max_sweeps), float(tolerance)))


def split_outlier_channels(
    model: Model,
    calibration_set: CalibrationSet,
    ratio: float = 3.0,
    *,
    batch_size: int = 32,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Step 1d (optional, after `prepare_network`): outlier channel splitting. Where a float
    island (a LayerNorm, say) hands a value to MatMuls with constant weights, and a few of its
    channels (the last axis, which the MatMuls contract) range over more than `ratio` times the
    median channel on the calibration set, each such channel becomes `n` copies of `x / n` and its
    weight row is repeated `n` times: the float function is unchanged, the weights are not
    rescaled, and the per-tensor 8-bit grid of the value no longer has to cover the outliers
    (their quantizer then keeps its whole range: max clipping). Other readers of the value
    (a residual Add) read it unchanged. A value islands hand to convolutions only is smoothed
    instead (SmoothQuant's migration of channel ranges into the weights) when its channels
    (axis 1) spread over more than `ratio` and more than 16 times the median (a speech model's
    STFT magnitudes). Runs the float model over the calibration set only when the model has
    such values. Returns (and keeps in `model.quant_info["split_channels"]`), by value: the
    method ("split" or "smooth"), its channels, the channels added, the largest over median
    channel range before and after, and the MatMuls or convolutions reading it."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)) or not ratio >= 1:
        raise InvalidArgumentError(f"ratio must be a number >= 1, got {ratio!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    native = model._native
    values = native.ptq_split_channels_begin()
    if values:
        feed = native.ptq_split_channels_batches
        fed = _feed_batches(model, calibration_set, batch_size, num_threads, progress, "channel ranges", feed)
        if not fed:
            raise InvalidArgumentError("split_outlier_channels was given an empty calibration set")
    return dict(native.ptq_split_channels_finish(float(ratio)))


def exclude_layers(model: Model, names: Iterable[str]) -> None:
    """Step 1c (optional, after `prepare_network`): keeps the nodes `names` in float. Each
    becomes a float island: its activation inputs are dequantized and its output requantized
    (with a calibrated range), the integer engine runs the float op and the exports keep it a
    float node. They are listed in `model.quant_info["float_nodes"]`."""
    if isinstance(names, str):
        names = [names]
    model._native.ptq_exclude([str(n) for n in names])


def insert_scaling_nodes(model: Model) -> None:
    """Step 2: inserts the Scaling nodes (factor 1: the function is unchanged)."""
    model._native.ptq_insert_scaling_nodes()


def normalize_parameters(model: Model, per_channel: bool = True) -> None:
    """Step 3: scales every weight tensor (or, with `per_channel`, every output channel) into
    [-1, 1], rescales biases and balances merging branches."""
    model._native.ptq_normalize_parameters(bool(per_channel))


# -- calibration data --------------------------------------------------------------------
def _input_specs(model: Model) -> list[tuple[str, np.dtype, list[Any] | None]]:
    return [(n, np.dtype(d), s) for n, d, s in model.inputs]


def _as_input(arr: Any, name: str, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype != dtype:
        if np.issubdtype(a.dtype, np.floating) and np.issubdtype(dtype, np.floating):
            a = a.astype(dtype)
        else:
            raise ShapeError(
                f"calibration data for input '{name}' is {a.dtype}, the model expects {dtype} "
                "(preprocess it into the model's input range first)"
            )
    # (np.ascontiguousarray would turn a 0-d input, e.g. a sample rate, into shape [1].)
    return np.asarray(a, order="C")


def _fixed_batch(shape: list[Any] | None) -> int | None:
    if shape and isinstance(shape[0], int):
        return int(shape[0])
    return None


def _batches(model: Model, data: CalibrationSet, batch_size: int) -> tuple[Iterator[dict[str, np.ndarray]], int | None]:
    """Yields feeds dicts; also returns the number of batches when it is known."""
    specs = _input_specs(model)
    names = [n for n, _, _ in specs]
    fixed = {_fixed_batch(s) for _, _, s in specs} - {None}
    if len(fixed) == 1:
        # The graph pins its batch size (e.g. 1): calibration follows it.
        batch_size = fixed.pop()

    def split(arrays: dict[str, np.ndarray]) -> tuple[Iterator[dict[str, np.ndarray]], int]:
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ShapeError(f"calibration arrays have different lengths: { {k: len(a) for k, a in arrays.items()} }")
        n = lengths.pop()
        count = -(-n // batch_size)

        def gen() -> Iterator[dict[str, np.ndarray]]:
            for i in range(0, n, batch_size):
                yield {k: a[i : i + batch_size] for k, a in arrays.items()}

        return gen(), count

    def to_feeds(item: Any) -> dict[str, np.ndarray]:
        if isinstance(item, Mapping):
            unknown = set(item) - set(names)
            missing = set(names) - set(item)
            if unknown or missing:
                raise ShapeError(
                    f"calibration batch names {sorted(item)} do not match the model's inputs {names}"
                    + (f" (unknown: {sorted(unknown)})" if unknown else "")
                    + (f" (missing: {sorted(missing)})" if missing else "")
                )
            return {n: _as_input(item[n], n, d) for n, d, _ in specs}
        if len(specs) != 1:
            raise ShapeError(f"the model has {len(specs)} inputs {names}: give calibration batches as dicts")
        n, d, shape = specs[0]
        a = _as_input(item, n, d)
        if shape is not None and a.ndim == len(shape) - 1:
            a = a[None]  # one sample
        return {n: a}

    if isinstance(data, np.ndarray):
        if len(specs) != 1:
            raise ShapeError(f"the model has {len(specs)} inputs {names}: give a dict of arrays")
        n, d, _ = specs[0]
        return split({n: _as_input(data, n, d)})
    if isinstance(data, Mapping):
        feeds = to_feeds(data)
        return split(feeds)
    if isinstance(data, (list, tuple)):
        items = list(data)
        if items and len(specs) == 1 and not isinstance(items[0], Mapping):
            n, d, shape = specs[0]
            first = np.asarray(items[0])
            if shape is not None and first.ndim == len(shape) - 1:
                # A list of single samples: stack them into batches.
                return split({n: _as_input(np.stack([np.asarray(x) for x in items]), n, d)})
        return (to_feeds(x) for x in items), len(items)
    if isinstance(data, Iterable):
        return (to_feeds(x) for x in data), None
    raise InvalidArgumentError(
        "calibration_set must be a numpy array [N, ...], a dict of arrays, a list of arrays or an iterable "
        f"of batches; got {type(data).__name__}"
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _feed_batches(
    model: Model,
    data: CalibrationSet,
    batch_size: int,
    num_threads: int | None,
    progress: bool | None,
    desc: str,
    feed: Any,
) -> int:
    """Hands `data` to `feed(group, num_threads)` in groups of batches, one batch per thread
    (the engine runs a group side by side; only that group is held in memory at a time),
    with a progress bar. Returns the number of batches fed."""
    batches, total = _batches(model, data, int(batch_size))
    per_call = int(num_threads) if num_threads else get_num_threads()
    bar = _progress_bar(total, progress, desc)
    fed = 0
    try:
        while group := list(itertools.islice(batches, per_call)):
            feed(group, num_threads)
            bar.update(len(group))
            fed += len(group)
    finally:
        bar.close()
    return fed


def _progress_bar(total: int | None, enabled: bool | None, desc: str) -> Any:
    """A tqdm bar (updated by the caller as work completes), or a stand-in that shows nothing."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False)


def compute_ranges(
    model: Model,
    calibration_set: CalibrationSet,
    batch_size: int = 32,
    progress: bool | None = None,
    num_threads: int | None = None,
    histograms: bool = True,
    layer_statistics: int = 0,
) -> dict[str, float]:
    """Step 4: runs the model over the calibration set, batch by batch, and records the range
    (and histograms) of every Scaling node's output. Batches run side by side, one per
    thread (`num_threads`, default `get_num_threads()`); the result does not depend on the
    thread count. Memory holds one batch per thread, whatever the number of samples.
    `histograms=False` skips the histograms, which only the "mse" and "kl" clipping methods
    need (a pass over every tensor saved). `layer_statistics=n` also gathers, over the first
    n samples, the mean and the Gram matrix `X^T X` of every Conv/Gemm/MatMul's input rows,
    which `round_weights` needs. Returns {Scaling node: range, in real units}."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    native = model._native
    ls = layer_statistics
    if isinstance(ls, bool) or not isinstance(ls, (int, np.integer)) or ls < 0:
        raise InvalidArgumentError(f"layer_statistics must be a number of samples >= 0, got {layer_statistics!r}")
    native.ptq_calibration_begin(bool(histograms), int(layer_statistics))
    try:
        feed = native.ptq_calibration_batches
        _feed_batches(model, calibration_set, batch_size, num_threads, progress, "calibration", feed)
        native.ptq_calibration_finish()
    except BaseException:
        # A bad batch, an empty set, Ctrl-C: the model keeps its previous state and ranges.
        native.ptq_calibration_abort()
        raise
    return {layer["name"]: layer["range"] for layer in model.quant_info["activations"] if layer["range"] is not None}


def adjust_ranges(
    model: Model,
    clipping: str = "mse",
    nb_bits: int = 8,
    optimize_signs: bool = True,
    activation_bits: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Step 5: picks each Scaling node's clipping value for `nb_bits` with `clipping` (max,
    mse, kl, sigma3, sigma4, sigma5; see docs/algorithm.md for what each minimizes). Use the
    same `optimize_signs` as in `quantize_normalized_network`. Returns {node: clip value}.

    `activation_bits={quantizer: bits}` gives single quantizers other widths (mixed
    activation precision), each named by its Scaling node or the value it writes
    (`quant_info["activations"]`, keys "name" and "tensor"), an input quantizer also by the
    graph input it reads. The inputs of one Add or Concat
    share a unit, so they share a width: the widest asked of any of them. The widths are
    kept for `quantize_normalized_network` and shown in `quant_info` ("bits")."""
    widths = None if activation_bits is None else dict(activation_bits)
    model._native.ptq_adjust_ranges(clipping, nb_bits, bool(optimize_signs), None, widths)
    return {layer["name"]: layer["clip"] for layer in model.quant_info["activations"] if layer["clip"] is not None}


def normalize_activations(model: Model) -> None:
    """Step 6: sets every Scaling node so that its output lies in [-1, 1] on the calibration
    data (within the clipping value), rescales biases and balances merging branches."""
    model._native.ptq_normalize_activations()


def round_weights(
    model: Model,
    weight_bits: int,
    *,
    gptq: bool = True,
    bias_correction: bool = True,
    weight_clipping: str = "max",
    layer_bits: Mapping[str, int] | None = None,
    damp: float = 0.01,
    input_aware: CalibrationSet | None = None,
    nb_bits: int | None = None,
    optimize_signs: bool = True,
    single_shift: bool = False,
    input_samples: int = 256,
    batch_size: int = 32,
) -> None:
    """Step 6b (optional, after `normalize_activations`; needs `compute_ranges(...,
    layer_statistics=n)`): puts every Conv/Gemm/MatMul weight on its `weight_bits` grid.
    `gptq` rounds each layer's columns in order against the Hessian `X^T X` of its
    calibration inputs, spreading each rounding error over the columns not yet rounded
    (`damp`: the damping, a fraction of the Hessian's mean diagonal); without it, weights are
    rounded to nearest. `bias_correction` takes the expected output shift `(W_q - W) E[x]`
    out of each bias. `layer_bits={node: bits}` gives single layers other widths.
    `quantize_normalized_network` must then use the same `weight_bits` and `weight_clipping`.

    `input_aware=calibration_set` fits each layer to the inputs it reads in the QUANTIZED
    network (activations on their `nb_bits` grids, earlier layers' weights rounded), over the
    first `input_samples` samples (in batches of `batch_size`): each weight row moves to the
    least-squares fit of the float layer's output from the quantized inputs, is rounded by
    GPTQ against the quantized inputs' Hessian (to nearest without `gptq`), and bias
    correction matches the mean outputs of the quantized and float networks. The quantized
    network is made as `quantize_normalized_network(nb_bits, optimize_signs=...)` would (give
    the values it will be called with); layers are rounded in graph order, each against the
    network whose earlier layers already have their new weights."""
    layer_bits_arg = None if layer_bits is None else dict(layer_bits)
    if input_aware is None:
        model._native.ptq_round_weights(
            weight_bits, weight_clipping, bool(gptq), bool(bias_correction), layer_bits_arg, float(damp)
        )
        return
    if nb_bits is None:
        raise InvalidArgumentError("round_weights: input_aware needs nb_bits (the activations' bit width)")
    for what, v in (("input_samples", input_samples), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InvalidArgumentError(f"{what} must be a positive integer, got {v!r}")
    batches = _first_batches(model, input_aware, int(input_samples), int(batch_size))
    model._native.ptq_round_weights(
        weight_bits,
        weight_clipping,
        bool(gptq),
        bool(bias_correction),
        layer_bits_arg,
        float(damp),
        None,
        batches,
        nb_bits,
        bool(optimize_signs),
        bool(single_shift),
    )


def _first_batches(model: Model, data: CalibrationSet, samples: int, batch_size: int) -> list[dict[str, np.ndarray]]:
    """The batches of `data` that hold its first `samples` samples (the last one cut)."""
    if isinstance(data, np.ndarray):
        data = data[:samples]
    elif isinstance(data, Mapping):
        data = {k: np.asarray(v)[:samples] for k, v in data.items()}
    out: list[dict[str, np.ndarray]] = []
    seen = 0
    for feeds in _batches(model, data, batch_size)[0]:
        n = len(next(iter(feeds.values())))
        if seen + n > samples:
            feeds = {k: v[: samples - seen] for k, v in feeds.items()}
            n = samples - seen
        out.append(feeds)
        seen += n
        if seen >= samples:
            break
    if not out:
        raise InvalidArgumentError("round_weights: input_aware was given an empty calibration set")
    return out


def affine_layers(model: Model) -> list[str]:
    """The names of the model's Conv/Gemm/MatMul nodes, in graph order (after
    `prepare_network`; mixed precision's `layer_bits` takes these names)."""
    return list(model._native.ptq_affine_nodes())


def quantize_normalized_network(
    model: Model,
    nb_bits: int,
    *,
    weight_bits: int | None = None,
    optimize_signs: bool = True,
    single_shift: bool = False,
    no_quant: bool = False,
    dequantize_outputs: bool = True,
    weight_clipping: str = "max",
    layer_bits: Mapping[str, int] | None = None,
) -> None:
    """Step 7: integer weights (`weight_bits`, default `nb_bits`) and biases, quantizers of
    `nb_bits` on activations. `optimize_signs` uses unsigned ranges where a tensor is provably
    non-negative; `single_shift` makes requantization factors powers of two (compensated in
    the weights); `no_quant` skips rounding (the normalized float network);
    `dequantize_outputs` appends a multiplication back to real units on every output;
    `weight_clipping="mse"` shrinks each weight range to minimize its rounding error;
    `layer_bits={node: bits}` gives single layers other weight widths (default: those given
    to `round_weights`, if it ran)."""
    model._native.ptq_quantize(
        nb_bits,
        weight_bits,
        bool(optimize_signs),
        bool(single_shift),
        bool(no_quant),
        bool(dequantize_outputs),
        weight_clipping,
        None if layer_bits is None else dict(layer_bits),
    )


def quantize_network(
    model: Model,
    nb_bits: int,
    calibration_set: CalibrationSet,
    *,
    preset: str = "best",
    clipping: str | None = None,
    per_channel: bool | None = None,
    optimize_signs: bool | None = None,
    single_shift: bool = False,
    no_quant: bool = False,
    dequantize_outputs: bool = True,
    weight_bits: int | None = None,
    weight_clipping: str | None = None,
    gptq: bool | None = None,
    bias_correction: bool | None = None,
    layer_bits: Mapping[str, int] | None = None,
    first_last_bits: int | None = None,
    activation_bits: Mapping[str, int] | None = None,
    equalize: bool = False,
    exclude: Iterable[str] = (),
    weight_bits_budget: float | None = None,
    activation_bits_budget: float | None = None,
    budget_samples: int = 8,
    layer_samples: int = 256,
    input_aware: bool | None = None,
    split_channels: float | bool | None = None,
    batch_size: int = 32,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> Model:
    """Quantizes `model` to `nb_bits` with the Aidge PTQ; returns a new model (the input is
    left untouched). See the step functions for the options; `model.quant_info` of the result
    holds the per-layer scales, ranges, clipping values, bit widths and signs.

    `preset` fills in the settings left as None: "best" (the default: per-channel weights,
    unsigned ranges where provable, MSE activation clipping, weights at their full range;
    what measures best across the benchmarked models, benches/RESULTS.md) or "aidge"
    (the seed's behaviour: per-tensor weights, signed ranges, max clipping). An explicit
    argument always wins over the preset. `equalize=True` runs `equalize_layers` after
    `prepare_network` (cross-layer equalization: mostly for per-tensor weights);
    `exclude=[node, ...]` keeps those nodes in float (`exclude_layers`).
    `split_channels` runs `split_outlier_channels` after them: a ratio >= 1, True (the "best"
    preset's 3), or False/0 (off; the "aidge" preset). From the preset only where the
    calibration set is an array, a dict of arrays or a list (it is read twice); it touches only
    values that float islands hand to MatMuls (a transformer's LayerNorm outputs), and CNNs
    have none.

    `weight_bits_budget=b` allocates weight widths between `weight_bits` (default 4) and 8
    bits per layer so that their average over the weights (by count) stays within `b`: each
    layer's sensitivity is the output error of rounding its weights alone to the low width,
    on the first `budget_samples` calibration samples, and bits go greedily to the layers
    where they lower it most per weight (`oxiquant.bits`). `layer_bits` and `first_last_bits`
    still fix their layers (counted in the budget). The widths chosen are in
    `quant_info["weights"]`; the sensitivities in `quant_info["bit_allocation"]`.

    Mixed precision: `layer_bits={node: bits}` sets single layers' weight widths;
    `activation_bits={value: bits}` single activations' widths (by the value a quantizer
    writes or its name, `adjust_ranges`); `first_last_bits=b` puts the first and last
    Conv/Gemm/MatMul at `b` bits, both their weights and the activations they read (the
    network's input and the classifier's input), as the post-training quantization
    literature keeps them. Explicit `layer_bits`/`activation_bits` entries win."""
    # Every argument is checked before any work starts (by the core, which checks each once).
    budgets = [b for b in (weight_bits_budget, activation_bits_budget) if b is not None]
    if budgets:
        if not isinstance(calibration_set, (np.ndarray, Mapping)):
            raise InvalidArgumentError(
                "a bits budget needs the calibration set as an array or a dict of arrays (its first "
                "budget_samples samples measure the sensitivities)"
            )
        if isinstance(budget_samples, bool) or not isinstance(budget_samples, (int, np.integer)) or budget_samples < 1:
            raise InvalidArgumentError(f"budget_samples must be a positive integer, got {budget_samples!r}")
    if activation_bits_budget is not None:
        from oxiquant import bits as _bits

        if isinstance(nb_bits, bool) or not isinstance(nb_bits, (int, np.integer)) or not 2 <= nb_bits < 8:
            raise InvalidArgumentError(
                f"activation_bits_budget spends bits above nb_bits up to 8: nb_bits must be 2 to 7, got {nb_bits!r}"
            )
        activation_bits_budget = _bits.check_budget(activation_bits_budget, int(nb_bits), 8, "activation_bits_budget")
    if weight_bits_budget is not None:
        from oxiquant import bits as _bits

        low = 4 if weight_bits is None else weight_bits
        weight_bits_budget = _bits.check_budget(weight_bits_budget, low if isinstance(low, int) else 2, 8)
        weight_bits = low
    st = check_quantize_options(
        nb_bits,
        clipping,
        weight_bits,
        weight_clipping,
        preset,
        per_channel,
        optimize_signs,
        gptq,
        bias_correction,
        input_aware,
        split_channels,
    )
    rounding = bool(st["gptq"] or st["bias_correction"])
    # Input-aware rounding reads the calibration set a second time: an array or a dict of
    # arrays (a one-shot iterable cannot be read twice). The preset asks for it only where
    # it can run; an explicit True with an iterable is an error.
    rereadable = isinstance(calibration_set, (np.ndarray, Mapping))
    if input_aware and not rereadable:
        raise InvalidArgumentError(
            "input_aware needs the calibration set as an array or a dict of arrays (it is read a second time)"
        )
    # From the preset: only where it can run (the set read twice, no single_shift).
    from_preset = rereadable and rounding and not single_shift
    aware = bool(st["input_aware"]) and not no_quant and (bool(input_aware) or from_preset)
    # (A list of batches can be read twice too: the split walks it before calibration.)
    split_rereadable = rereadable or isinstance(calibration_set, (list, tuple))
    if split_channels not in (None, False, 0) and not split_rereadable:
        raise InvalidArgumentError(
            "split_channels needs the calibration set as an array, a dict of arrays or a list of batches "
            "(it is read a second time)"
        )
    split_ratio = st["split_channels"] if split_rereadable and not no_quant else None
    if aware and not rounding:
        raise InvalidArgumentError("input_aware rounds the weights: it needs gptq or bias_correction on")
    if isinstance(layer_samples, bool) or not isinstance(layer_samples, (int, np.integer)) or layer_samples < 1:
        raise InvalidArgumentError(f"layer_samples must be a positive integer, got {layer_samples!r}")
    q = model.copy()
    prepare_network(q)
    if equalize:
        equalize_layers(q)
    exclude_layers(q, exclude)
    if split_ratio is not None:
        split_outlier_channels(
            q, calibration_set, split_ratio, batch_size=batch_size, progress=progress, num_threads=num_threads
        )
    bits_by_layer = dict(layer_bits or {})
    if first_last_bits is not None:
        layers = affine_layers(q)
        for name in (layers[:1] + layers[-1:]):
            bits_by_layer.setdefault(name, first_last_bits)
    allocation = None
    if weight_bits_budget is not None:
        from oxiquant import bits as _bits

        n = int(budget_samples)
        # The first n samples, as the model's input dtypes (what calibration feeds it).
        first = (
            {k: np.asarray(v)[:n] for k, v in calibration_set.items()}
            if isinstance(calibration_set, Mapping)
            else np.asarray(calibration_set)[:n]
        )
        samples = next(_batches(q, first, n)[0])
        sens = _bits.layer_sensitivity(
            q, samples, st["weight_bits"], per_channel=st["per_channel"], layers=affine_layers(q)
        )
        bits_by_layer = _bits.allocate_bits(sens, weight_bits_budget, st["weight_bits"], 8, fixed=bits_by_layer)
        allocation = {
            name: {"weights": count, "sensitivity": noise, "bits": bits_by_layer[name]}
            for name, (count, noise) in sens.items()
        }
    insert_scaling_nodes(q)
    widths = dict(activation_bits or {})
    if first_last_bits is not None:
        # The first and last layers at first_last_bits: their weights (above) and the codes
        # they read (the network's input quantizer, and the classifier's input).
        layers = affine_layers(q)
        for name in layers[:1] + layers[-1:]:
            quantizer = q._native.ptq_input_quantizer(name)
            if quantizer is not None:
                widths.setdefault(quantizer, first_last_bits)
    normalize_parameters(q, per_channel=st["per_channel"])
    compute_ranges(
        q,
        calibration_set,
        batch_size=batch_size,
        progress=progress,
        num_threads=num_threads,
        histograms=st["histograms"],
        # Input-aware rounding gathers its own statistics (on the quantized network): the
        # float ones would only round the starting point it replaces.
        layer_statistics=layer_samples if rounding and not aware else 0,
    )
    act_allocation = None
    if activation_bits_budget is not None:
        chosen, act_allocation = _allocate_activation_bits(
            model, q, calibration_set, activation_bits_budget, st, int(budget_samples), widths, progress
        )
        widths.update(chosen)
    adjust_ranges(
        q,
        clipping=st["clipping"],
        nb_bits=st["nb_bits"],
        optimize_signs=st["optimize_signs"],
        activation_bits=widths,
    )
    normalize_activations(q)
    if rounding:
        round_weights(
            q,
            st["weight_bits"],
            gptq=st["gptq"],
            bias_correction=st["bias_correction"],
            weight_clipping=st["weight_clipping"],
            layer_bits=bits_by_layer,
            input_aware=calibration_set if aware else None,
            nb_bits=st["nb_bits"],
            optimize_signs=st["optimize_signs"],
            single_shift=single_shift,
            input_samples=layer_samples,
        )
    quantize_normalized_network(
        q,
        st["nb_bits"],
        weight_bits=st["weight_bits"],
        optimize_signs=st["optimize_signs"],
        single_shift=single_shift,
        no_quant=no_quant,
        dequantize_outputs=dequantize_outputs,
        weight_clipping=st["weight_clipping"],
        layer_bits=bits_by_layer,
    )
    if allocation is not None:
        q._bit_allocation = allocation
    if act_allocation is not None:
        q._activation_allocation = act_allocation
    return q


def _allocate_activation_bits(
    model: Model,
    q: Model,
    calibration_set: CalibrationSet,
    budget: float,
    st: Mapping[str, Any],
    n: int,
    fixed: Mapping[str, int],
    progress: bool | None,
) -> tuple[dict[str, int], dict[str, Any]]:
    """Activation widths from `activation_bits_budget` (`q` after `compute_ranges`): each
    group of quantizers that shares a width is measured alone at `nb_bits` with everything
    else at 8 bits, and bits go greedily where they lower the output error most per
    activation element (`oxiquant.bits`). Quantizers in `fixed` keep their widths."""
    from oxiquant import bits as _bits

    first = (
        {k: np.asarray(v)[:n] for k, v in calibration_set.items()}
        if isinstance(calibration_set, Mapping)
        else np.asarray(calibration_set)[:n]
    )
    samples = next(_batches(q, first, n)[0])
    reference = model.run(samples)[model.output_names[0]]
    low = int(st["nb_bits"])
    # The fixed widths by quantizer (the core resolves the names `activation_bits` takes).
    fixed_q = q._native.ptq_quantizer_widths(dict(fixed))
    groups = q._native.ptq_activation_groups()
    bar = _progress_bar(len(groups), progress, "activation sensitivity")
    try:
        sens = _bits.activation_sensitivity(
            q, reference, samples, low, 8, st["clipping"], st["optimize_signs"], fixed=fixed_q, on_group=bar.update
        )
    finally:
        bar.close()
    # The groups left out (with a fixed member) count in the average at the width they get:
    # their widest.
    counts = {g: (count, noise) for g, (_, count, noise) in sens.items()}
    held: dict[str, int] = {}
    left_out = [g for g in groups if g[0] not in sens]
    elements = _bits.group_elements(q, left_out)
    for group in left_out:
        counts[group[0]] = (elements[group[0]], 0.0)
        held[group[0]] = max([low, *(fixed_q.get(a, low) for a in group)])
    chosen = _bits.allocate_bits(counts, budget, low, 8, fixed=held, what="activation_bits_budget")
    out: dict[str, int] = {}
    report = {}
    for g, (group, count, noise) in sens.items():
        for name in group:
            out[name] = chosen[g]
        report[g] = {"quantizers": group, "elements": count, "sensitivity": noise, "bits": chosen[g]}
    return out, report
