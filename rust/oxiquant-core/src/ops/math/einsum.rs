//! Einsum on float32 operands: any equation of letters and one ellipsis per term, explicit
//! (`->`) or implicit output; repeated letters in a term take a diagonal, letters absent from
//! the output are summed, ellipsis dimensions broadcast. Computed by one pass over every
//! combination of the labels' indices, accumulating in f64.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{broadcast_dims, expect_dtype, fact_error, unify_dim, DimFact, ValueFact};
use crate::ops::{attr, input, DataInputs, FromOnnx, Op, ParseCtx};
use crate::tensor::{check_alloc, DType, Tensor};

/// One subscript of a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Letter(u8),
    Ellipsis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Einsum {
    pub equation: String,
    terms: Vec<Vec<Sub>>,
    /// `None`: implicit (the ellipsis, then the letters used once, in alphabetical order).
    output: Option<Vec<Sub>>,
}

fn parse_term(t: &str) -> std::result::Result<Vec<Sub>, String> {
    let mut out = Vec::new();
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"...") {
            if out.contains(&Sub::Ellipsis) {
                return Err(format!("term '{t}' has two ellipses"));
            }
            out.push(Sub::Ellipsis);
            i += 3;
        } else if b[i].is_ascii_alphabetic() {
            out.push(Sub::Letter(b[i]));
            i += 1;
        } else {
            return Err(format!("term '{t}' has the character '{}'", b[i] as char));
        }
    }
    Ok(out)
}

impl Einsum {
    pub fn new(equation: &str) -> std::result::Result<Einsum, String> {
        let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let terms = lhs
            .split(',')
            .map(parse_term)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let output = rhs.map(parse_term).transpose()?;
        if let Some(o) = &output {
            for (i, s) in o.iter().enumerate() {
                if o[..i].contains(s) {
                    return Err(format!("the output repeats {s:?}"));
                }
                if let Sub::Letter(c) = s {
                    if !terms.iter().any(|t| t.contains(s)) {
                        return Err(format!("output letter '{}' is in no input", *c as char));
                    }
                }
            }
        }
        Ok(Einsum {
            equation: eq,
            terms,
            output,
        })
    }

    /// For each operand of rank `ranks[i]`, its dimensions' labels: ellipsis dimension `j`
    /// (counted in the broadcast ellipsis of rank `e`) is label `j`, letter `c` is `e + c`.
    /// Returns the labels of each operand, of the output, and the ellipsis rank.
    fn labels(&self, ranks: &[usize]) -> std::result::Result<Labels, String> {
        if ranks.len() != self.terms.len() {
            return Err(format!(
                "the equation '{}' has {} terms, got {} inputs",
                self.equation,
                self.terms.len(),
                ranks.len()
            ));
        }
        let mut ell = vec![0usize; ranks.len()];
        for (i, (t, &r)) in self.terms.iter().zip(ranks).enumerate() {
            let letters = t.iter().filter(|s| **s != Sub::Ellipsis).count();
            let has = t.contains(&Sub::Ellipsis);
            if r < letters || (!has && r != letters) {
                return Err(format!("term '{}' does not fit input #{i} of rank {r}", term_string(t)));
            }
            ell[i] = r - letters;
        }
        let e = ell.iter().copied().max().unwrap_or(0);
        let letter = |c: u8| e + c as usize;
        let mut ops = Vec::with_capacity(ranks.len());
        for (t, &ei) in self.terms.iter().zip(&ell) {
            let mut l = Vec::new();
            for s in t {
                match s {
                    Sub::Letter(c) => l.push(letter(*c)),
                    Sub::Ellipsis => l.extend(e - ei..e),
                }
            }
            ops.push(l);
        }
        let out = match &self.output {
            Some(o) => {
                if e > 0 && !o.contains(&Sub::Ellipsis) {
                    return Err("the inputs have ellipsis dimensions the output lacks".into());
                }
                let mut l = Vec::new();
                for s in o {
                    match s {
                        Sub::Letter(c) => l.push(letter(*c)),
                        Sub::Ellipsis => l.extend(0..e),
                    }
                }
                l
            }
            None => {
                let mut l: Vec<usize> = (0..e).collect();
                let mut once: Vec<u8> = Vec::new();
                for c in 0u8..128 {
                    let n: usize = self
                        .terms
                        .iter()
                        .map(|t| t.iter().filter(|s| **s == Sub::Letter(c)).count())
                        .sum();
                    if n == 1 {
                        once.push(c);
                    }
                }
                l.extend(once.into_iter().map(letter));
                l
            }
        };
        Ok((ops, out, e))
    }
}

/// The labels of each operand's dimensions, of the output's, and the ellipsis rank.
type Labels = (Vec<Vec<usize>>, Vec<usize>, usize);

fn term_string(t: &[Sub]) -> String {
    t.iter()
        .map(|s| match s {
            Sub::Letter(c) => (*c as char).to_string(),
            Sub::Ellipsis => "...".into(),
        })
        .collect()
}

impl FromOnnx for Einsum {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let eq = a
            .string_opt("equation")?
            .ok_or_else(|| a.unsupported("a missing equation"))?;
        Einsum::new(&eq).map_err(|m| a.unsupported(format!("equation '{eq}': {m}")))
    }
}

impl Op for Einsum {
    fn op_type(&self) -> &'static str {
        "Einsum"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("equation", AttrValue::String(self.equation.clone()))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let xs: Vec<&Tensor> = (0..inputs.len())
            .map(|i| input(inputs, i, "Inputs"))
            .collect::<Result<_>>()?;
        let ranks: Vec<usize> = xs.iter().map(|t| t.rank()).collect();
        let err = |m: String| Error::shape(format!("Einsum '{}': {m}", self.equation));
        let (ops, out, e) = self.labels(&ranks).map_err(err)?;
        let n_labels = e + 128;
        // Each label's size: letters equal everywhere, ellipsis dimensions broadcast.
        let mut size: Vec<Option<usize>> = vec![None; n_labels];
        for (l, t) in ops.iter().zip(&xs) {
            for (&lab, &d) in l.iter().zip(t.shape()) {
                size[lab] = match size[lab] {
                    None => Some(d),
                    Some(s) if s == d => Some(s),
                    Some(1) if lab < e => Some(d),
                    Some(s) if lab < e && d == 1 => Some(s),
                    Some(s) => {
                        return Err(err(format!(
                            "dimension sizes {s} and {d} of one subscript differ (inputs {:?})",
                            xs.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>()
                        )))
                    }
                };
            }
        }
        let used: Vec<usize> = (0..n_labels).filter(|&l| size[l].is_some()).collect();
        let dims: Vec<usize> = used.iter().map(|&l| size[l].unwrap_or(1)).collect();
        let out_shape: Vec<usize> = out.iter().map(|&l| size[l].unwrap_or(1)).collect();
        let n_out = check_alloc(&out_shape, 4)?;
        // The stride of each used label in each operand (summed over repeats: diagonals;
        // 0 along a broadcast dimension) and in the output.
        let stride_in = |k: usize, lab: usize| -> usize {
            let st = crate::tensor::strides(xs[k].shape());
            ops[k]
                .iter()
                .zip(xs[k].shape())
                .enumerate()
                .filter(|(_, (&l, &d))| l == lab && d != 1)
                .map(|(j, _)| st[j])
                .sum()
        };
        let ost = crate::tensor::strides(&out_shape);
        let steps: Vec<Vec<usize>> = used
            .iter()
            .map(|&lab| {
                let mut v: Vec<usize> = (0..xs.len()).map(|k| stride_in(k, lab)).collect();
                v.push(out.iter().position(|&o| o == lab).map_or(0, |p| ost[p]));
                v
            })
            .collect();
        let vals: Vec<&[f32]> = xs.iter().map(|t| t.as_slice::<f32>()).collect::<Result<_>>()?;
        let mut acc = vec![0f64; n_out];
        let total = crate::tensor::numel(&dims);
        if total > 0 {
            let m = xs.len();
            let mut idx = vec![0usize; dims.len()];
            let mut off = vec![0usize; m + 1];
            for _ in 0..total {
                let mut p = 1f64;
                for k in 0..m {
                    p *= vals[k][off[k]] as f64;
                }
                acc[off[m]] += p;
                for d in (0..dims.len()).rev() {
                    idx[d] += 1;
                    for (o, s) in off.iter_mut().zip(&steps[d]) {
                        *o += s;
                    }
                    if idx[d] < dims[d] {
                        break;
                    }
                    for (o, s) in off.iter_mut().zip(&steps[d]) {
                        *o -= s * idx[d];
                    }
                    idx[d] = 0;
                }
            }
        }
        Ok(vec![Tensor::from_vec(
            out_shape,
            acc.into_iter().map(|v| v as f32).collect(),
        )?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let mut facts = Vec::new();
        for i in 0..inputs.len() {
            let f = crate::ops::facts::required(inputs, i, "Einsum", "Inputs")?;
            expect_dtype("Einsum", f, "every input", &[DType::F32])?;
            facts.push(f);
        }
        let Some(ranks) = facts.iter().map(|f| f.rank()).collect::<Option<Vec<usize>>>() else {
            return Ok(vec![ValueFact::new(Some(DType::F32), None)]);
        };
        let (ops, out, e) = self.labels(&ranks).map_err(|m| fact_error("Einsum", m))?;
        let mut size: Vec<Option<DimFact>> = vec![None; e + 128];
        for (l, f) in ops.iter().zip(&facts) {
            for (j, &lab) in l.iter().enumerate() {
                let d = f.dim(j);
                size[lab] = Some(match &size[lab] {
                    None => d,
                    Some(s) if lab < e => broadcast_dims("Einsum", std::slice::from_ref(s), &[d])?.remove(0),
                    Some(s) => unify_dim("Einsum", s, &d, || {
                        format!("dimension sizes {s} and {d} of one subscript differ")
                    })?,
                });
            }
        }
        let shape = out
            .iter()
            .map(|&l| size[l].clone().unwrap_or(DimFact::Known(1)))
            .collect();
        Ok(vec![ValueFact::new(Some(DType::F32), Some(shape))])
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
}
