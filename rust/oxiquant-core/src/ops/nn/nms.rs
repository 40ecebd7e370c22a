//! NonMaxSuppression: the detectors' post-processing. Per batch and class, the boxes whose
//! score passes the threshold are taken by decreasing score (the lower box index first on a
//! tie) and kept unless their intersection over union with a box already kept exceeds the
//! IoU threshold, up to `max_output_boxes_per_class`. The output lists the kept boxes as
//! `[batch, class, box]` int64 rows, by batch, then class, then order of selection (as
//! onnxruntime orders them). The geometry is computed in float32, as onnxruntime does, so
//! that a box on the IoU threshold is decided the same way.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required, unify_dim};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct NonMaxSuppression {
    /// Boxes as `[x_center, y_center, width, height]` (else `[y1, x1, y2, x2]`, any two
    /// diagonal corners).
    pub center_point_box: bool,
}

impl FromOnnx for NonMaxSuppression {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let c = cx.attrs.int("center_point_box", 0)?;
        if c != 0 && c != 1 {
            return Err(cx.attrs.unsupported(format!("center_point_box {c} (0 or 1)")));
        }
        Ok(NonMaxSuppression {
            center_point_box: c == 1,
        })
    }
}

/// A box as `[x_min, y_min, x_max, y_max]`.
fn corners(b: &[f32], center: bool) -> [f32; 4] {
    if center {
        let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
        [b[0] - hw, b[1] - hh, b[0] + hw, b[1] + hh]
    } else {
        [b[1].min(b[3]), b[0].min(b[2]), b[1].max(b[3]), b[0].max(b[2])]
    }
}

/// Whether box `a` suppresses box `b`: their IoU exceeds `threshold` (empty boxes and
/// disjoint boxes never do).
pub(crate) fn suppresses(a: &[f32; 4], b: &[f32; 4], threshold: f32) -> bool {
    let (ix0, ix1) = (a[0].max(b[0]), a[2].min(b[2]));
    if ix1 <= ix0 {
        return false;
    }
    let (iy0, iy1) = (a[1].max(b[1]), a[3].min(b[3]));
    if iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    if inter <= 0.0 {
        return false;
    }
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > threshold
}

/// The boxes kept for one class: `boxes` as corners, `scores` one per box.
pub(crate) fn select(
    boxes: &[[f32; 4]],
    scores: &[f32],
    max_out: usize,
    iou: f32,
    score_threshold: Option<f32>,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&i| score_threshold.is_none_or(|t| scores[i] > t))
        .collect();
    // Decreasing score, the lower index first on a tie (a stable sort keeps index order).
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() >= max_out {
            break;
        }
        if !kept.iter().any(|&k| suppresses(&boxes[k], &boxes[i], iou)) {
            kept.push(i);
        }
    }
    kept
}

/// The first element of an optional scalar input.
fn scalar_f32(inputs: &[Option<&Tensor>], i: usize, name: &str) -> Result<Option<f32>> {
    match inputs.get(i).copied().flatten() {
        None => Ok(None),
        Some(t) if t.len() == 1 && t.dtype() == DType::F32 => Ok(Some(t.to_f32_vec()[0])),
        Some(t) => Err(Error::shape(format!(
            "NonMaxSuppression: {name} must be one float32 value, got {} {:?}",
            t.dtype(),
            t.shape()
        ))),
    }
}

impl Op for NonMaxSuppression {
    fn op_type(&self) -> &'static str {
        "NonMaxSuppression"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.center_point_box {
            vec![("center_point_box".into(), AttrValue::Int(1))]
        } else {
            Vec::new()
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let boxes = input(inputs, 0, "boxes")?;
        let scores = input(inputs, 1, "scores")?;
        let (bs, ss) = (boxes.shape(), scores.shape());
        if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
            return Err(Error::shape(format!(
                "NonMaxSuppression: boxes must be [batches, boxes, 4] and scores [batches, classes, boxes], got {bs:?} and {ss:?}"
            )));
        }
        let max_out = match inputs.get(2).copied().flatten() {
            None => 0,
            Some(t) if t.len() == 1 && t.dtype() == DType::I64 => t.to_i64_vec()?[0].max(0),
            Some(t) => {
                return Err(Error::shape(format!(
                    "NonMaxSuppression: max_output_boxes_per_class must be one int64 value, got {} {:?}",
                    t.dtype(),
                    t.shape()
                )))
            }
        };
        let iou = scalar_f32(inputs, 3, "iou_threshold")?.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&iou) {
            return Err(Error::shape(format!(
                "NonMaxSuppression: iou_threshold must be in [0, 1], got {iou}"
            )));
        }
        let score_threshold = scalar_f32(inputs, 4, "score_threshold")?;
        let (nb, nbox, nc) = (bs[0], bs[1], ss[1]);
        let bv = boxes.as_slice::<f32>()?;
        let sv = scores.as_slice::<f32>()?;
        let max_out = usize::try_from(max_out).unwrap_or(usize::MAX);
        let mut rows: Vec<i64> = Vec::new();
        if max_out > 0 {
            for b in 0..nb {
                let corner: Vec<[f32; 4]> = (0..nbox)
                    .map(|i| corners(&bv[(b * nbox + i) * 4..(b * nbox + i + 1) * 4], self.center_point_box))
                    .collect();
                for c in 0..nc {
                    let s = &sv[(b * nc + c) * nbox..(b * nc + c + 1) * nbox];
                    for i in select(&corner, s, max_out, iou, score_threshold) {
                        rows.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        let n = rows.len() / 3;
        Ok(vec![Tensor::from_vec(vec![n, 3], rows)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "NonMaxSuppression";
        let boxes = required(inputs, 0, op, "boxes")?;
        let scores = required(inputs, 1, op, "scores")?;
        expect_dtype(op, boxes, "boxes", &[DType::F32])?;
        expect_dtype(op, scores, "scores", &[DType::F32])?;
        for (f, name) in [(boxes, "boxes"), (scores, "scores")] {
            if f.rank().is_some_and(|r| r != 3) {
                return Err(fact_error(op, format!("{name} must be 3-D, got {}", f.shape_string())));
            }
        }
        if boxes.dim(2).known().is_some_and(|d| d != 4) {
            return Err(fact_error(
                op,
                format!("boxes must be [batches, boxes, 4], got {}", boxes.shape_string()),
            ));
        }
        if boxes.rank().is_some() && scores.rank().is_some() {
            let what = || {
                format!(
                    "boxes {} and scores {} do not match",
                    boxes.shape_string(),
                    scores.shape_string()
                )
            };
            unify_dim(op, &boxes.dim(0), &scores.dim(0), what)?;
            unify_dim(op, &boxes.dim(1), &scores.dim(2), what)?;
        }
        if let Some(f) = optional(inputs, 2) {
            expect_dtype(op, f, "max_output_boxes_per_class", &[DType::I64])?;
        }
        for i in [3, 4] {
            if let Some(f) = optional(inputs, i) {
                expect_dtype(op, f, "a threshold", &[DType::F32])?;
            }
        }
        // How many boxes are kept depends on the values: known when every input is constant.
        let all_const = inputs
            .iter()
            .enumerate()
            .all(|(i, f)| f.is_none() || constants.get(i).copied().flatten().is_some());
        if all_const {
            let values: Vec<Option<&Tensor>> = (0..inputs.len()).map(|i| constants.get(i).copied().flatten()).collect();
            return Ok(self.eval(&values)?.iter().map(ValueFact::of_tensor).collect());
        }
        Ok(vec![ValueFact::new(
            Some(DType::I64),
            Some(vec![DimFact::Unknown, DimFact::Known(3)]),
        )])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IoU in f64 from the definition: the overlap's area over the union's.
    fn iou_f64(a: &[f32; 4], b: &[f32; 4]) -> f64 {
        let f = |v: f32| f64::from(v);
        let w = (f(a[2]).min(f(b[2])) - f(a[0]).max(f(b[0]))).max(0.0);
        let h = (f(a[3]).min(f(b[3])) - f(a[1]).max(f(b[1]))).max(0.0);
        let inter = w * h;
        let area = |r: &[f32; 4]| (f(r[2]) - f(r[0])) * (f(r[3]) - f(r[1]));
        inter / (area(a) + area(b) - inter)
    }

    proptest! {
        /// The kept boxes: no two overlap past the threshold, each dropped box overlaps a
        /// kept box of higher score past it (or the output is full), scores decrease.
        #[test]
        fn selection_is_greedy_by_score(seed in any::<u64>(), n in 0usize..12, max_out in 0usize..6, t in 0.0f32..1.0) {
            let v = crate::testing::values(n * 5, seed);
            let boxes: Vec<[f32; 4]> = (0..n)
                .map(|i| {
                    let (x, y) = (v[i * 5] * 4.0, v[i * 5 + 1] * 4.0);
                    let (w, h) = (v[i * 5 + 2].abs() * 3.0 + 0.5, v[i * 5 + 3].abs() * 3.0 + 0.5);
                    [x, y, x + w, y + h]
                })
                .collect();
            let scores: Vec<f32> = (0..n).map(|i| v[i * 5 + 4]).collect();
            let kept = select(&boxes, &scores, max_out, t, None);
            prop_assert!(kept.len() <= max_out);
            for (j, &a) in kept.iter().enumerate() {
                for &b in &kept[..j] {
                    prop_assert!(scores[b] >= scores[a]);
                    prop_assert!(iou_f64(&boxes[a], &boxes[b]) <= f64::from(t) + 1e-5);
                }
            }
            if kept.len() < max_out {
                for i in (0..n).filter(|i| !kept.contains(i)) {
                    let by = kept.iter().any(|&k| scores[k] >= scores[i] && iou_f64(&boxes[k], &boxes[i]) >= f64::from(t) - 1e-5);
                    prop_assert!(by, "box {} dropped without a cause", i);
                }
            }
        }
    }
}
