//! The recurrent layers LSTM, GRU and RNN: forward, reverse and bidirectional, per-batch
//! sequence lengths, initial states, LSTM peepholes, GRU's linear_before_reset, both layouts,
//! the default activations.
//!
//! Each direction multiplies the whole input sequence by its input weights in one product,
//! then steps through time with one product of the hidden state by the recurrence weights.

use crate::error::{Error, Result};
use crate::kernels::gemm::{sgemm, MatRef};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor};

/// Which recurrent layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
    Rnn,
}

impl Cell {
    /// Gates per hidden unit in W, R and B.
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn => 1,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
            Cell::Rnn => "RNN",
        }
    }
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Rnn => &["Tanh"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recurrent {
    pub cell: Cell,
    pub direction: Direction,
    pub hidden_size: usize,
    /// 0: [seq, batch, ...]; 1: [batch, seq, ...].
    pub layout: i64,
    pub linear_before_reset: bool,
    /// The `activations` attribute as written (only the defaults are accepted).
    pub activations: Option<Vec<String>>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The shapes of one call.
struct Dims {
    batch: usize,
    input: usize,
    dirs: usize,
}

impl Recurrent {
    fn dirs(&self) -> usize {
        if self.direction == Direction::Bidirectional {
            2
        } else {
            1
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::shape(format!("{}: {msg}", self.cell.name()))
    }

    /// Checks an optional input's shape and returns its values.
    fn optional_input<'a>(
        &self,
        inputs: &[Option<&'a Tensor>],
        i: usize,
        name: &str,
        want: &[usize],
    ) -> Result<Option<&'a [f32]>> {
        match inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(t) if t.shape() == want => Ok(Some(t.as_slice::<f32>()?)),
            Some(t) => Err(self.err(format!("{name} has shape {:?}, expected {want:?}", t.shape()))),
        }
    }

    /// A state input ([dirs, batch, hidden], or [batch, dirs, hidden] in layout 1) in layout 0.
    fn state_input(&self, inputs: &[Option<&Tensor>], i: usize, name: &str, d: &Dims) -> Result<Option<Vec<f32>>> {
        let h = self.hidden_size;
        let want = if self.layout == 0 {
            [d.dirs, d.batch, h]
        } else {
            [d.batch, d.dirs, h]
        };
        Ok(self.optional_input(inputs, i, name, &want)?.map(|v| {
            if self.layout == 0 {
                v.to_vec()
            } else {
                swap01(v, d.batch, d.dirs, h)
            }
        }))
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let w = input(inputs, 1, "W")?;
        let r = input(inputs, 2, "R")?;
        let (h, g) = (self.hidden_size, self.cell.gates());
        if x.rank() != 3 {
            return Err(self.err(format!("X must be 3-D, got shape {:?}", x.shape())));
        }
        let xs = x.shape();
        let (seq, batch) = if self.layout == 0 {
            (xs[0], xs[1])
        } else {
            (xs[1], xs[0])
        };
        let d = Dims {
            batch,
            input: xs[2],
            dirs: self.dirs(),
        };
        if w.shape() != [d.dirs, g * h, d.input] {
            return Err(self.err(format!(
                "W has shape {:?}, expected {:?}",
                w.shape(),
                [d.dirs, g * h, d.input]
            )));
        }
        if r.shape() != [d.dirs, g * h, h] {
            return Err(self.err(format!(
                "R has shape {:?}, expected {:?}",
                r.shape(),
                [d.dirs, g * h, h]
            )));
        }
        let bias = self.optional_input(inputs, 3, "B", &[d.dirs, 2 * g * h])?;
        let lens: Vec<usize> = match inputs.get(4).copied().flatten() {
            None => vec![seq; batch],
            Some(t) => {
                let v = t.to_i64_vec()?;
                if t.shape() != [batch] || v.iter().any(|&l| l < 0 || l as usize > seq) {
                    return Err(self.err(format!(
                        "sequence_lens {v:?} should be {batch} lengths of at most {seq}"
                    )));
                }
                v.into_iter().map(|l| l as usize).collect()
            }
        };
        let h0 = self.state_input(inputs, 5, "initial_h", &d)?;
        let (c0, peep) = if self.cell == Cell::Lstm {
            (
                self.state_input(inputs, 6, "initial_c", &d)?,
                self.optional_input(inputs, 7, "P", &[d.dirs, 3 * h])?,
            )
        } else {
            (None, None)
        };
        check_alloc(&[seq, d.dirs, batch, h], 4)?;
        check_alloc(&[seq, batch, g * h], 4)?;
        // X in layout 0: [seq, batch, input].
        let xv = x.as_slice::<f32>()?;
        let x0 = if self.layout == 0 {
            xv.to_vec()
        } else {
            swap01(xv, batch, seq, d.input)
        };
        let (w, r) = (w.as_slice::<f32>()?, r.as_slice::<f32>()?);
        let plane = batch * h;
        let mut y = vec![0f32; seq * d.dirs * plane];
        let mut yh = vec![0f32; d.dirs * plane];
        let mut yc = vec![0f32; d.dirs * plane];
        for dir in 0..d.dirs {
            let reverse = self.direction == Direction::Reverse || dir == 1;
            let wd = &w[dir * g * h * d.input..][..g * h * d.input];
            let rd = &r[dir * g * h * h..][..g * h * h];
            let bd = bias.map(|b| &b[dir * 2 * g * h..][..2 * g * h]);
            // Input projections of every step: [seq * batch, g * h] = X W^T + Wb (+ Rb for
            // the gates whose recurrence bias adds outside a product).
            let mut xw = vec![0f32; seq * batch * g * h];
            if let Some(b) = bd {
                for row in xw.chunks_mut(g * h) {
                    for (k, v) in row.iter_mut().enumerate() {
                        // GRU's hidden gate with linear_before_reset keeps Rb inside.
                        let rb_inside = self.cell == Cell::Gru && k >= 2 * h && self.linear_before_reset;
                        *v = b[k] + if rb_inside { 0.0 } else { b[g * h + k] };
                    }
                }
            }
            sgemm(
                seq * batch,
                g * h,
                d.input,
                1.0,
                MatRef::row_major(&x0, d.input, false),
                MatRef::row_major(wd, d.input, true),
                &mut xw,
                bd.is_some(),
                1,
            );
            let mut hs = h0
                .as_ref()
                .map_or(vec![0f32; plane], |v| v[dir * plane..][..plane].to_vec());
            let mut cs = c0
                .as_ref()
                .map_or(vec![0f32; plane], |v| v[dir * plane..][..plane].to_vec());
            let pd = peep.map(|p| &p[dir * 3 * h..][..3 * h]);
            let mut hr = vec![0f32; batch * g * h];
            for step in 0..seq {
                // Each batch entry runs its own length: step `step` of entry b is time
                // `step` forwards, `len - 1 - step` backwards; nothing past its length.
                sgemm(
                    batch,
                    g * h,
                    h,
                    1.0,
                    MatRef::row_major(&hs, h, false),
                    MatRef::row_major(rd, h, true),
                    &mut hr,
                    false,
                    1,
                );
                for b in 0..batch {
                    let len = lens[b];
                    if step >= len {
                        continue;
                    }
                    let t = if reverse { len - 1 - step } else { step };
                    let xg = &xw[(t * batch + b) * g * h..][..g * h];
                    let rg = &hr[b * g * h..][..g * h];
                    let hb = &mut hs[b * h..][..h];
                    let cb = &mut cs[b * h..][..h];
                    match self.cell {
                        Cell::Lstm => {
                            for j in 0..h {
                                let pre = |k: usize| xg[k * h + j] + rg[k * h + j];
                                let (pi, po, pf) = pd.map_or((0.0, 0.0, 0.0), |p| (p[j], p[h + j], p[2 * h + j]));
                                let i = sigmoid(pre(0) + pi * cb[j]);
                                let f = sigmoid(pre(2) + pf * cb[j]);
                                let c = pre(3).tanh();
                                let cn = f * cb[j] + i * c;
                                let o = sigmoid(pre(1) + po * cn);
                                cb[j] = cn;
                                hb[j] = o * cn.tanh();
                            }
                        }
                        Cell::Gru => {
                            let rbh = bd.map(|bb| &bb[g * h + 2 * h..][..h]);
                            if self.linear_before_reset {
                                let mut hn = vec![0f32; h];
                                for j in 0..h {
                                    let z = sigmoid(xg[j] + rg[j]);
                                    let r = sigmoid(xg[h + j] + rg[h + j]);
                                    let rb = rbh.map_or(0.0, |v| v[j]);
                                    let hh = (xg[2 * h + j] + r * (rg[2 * h + j] + rb)).tanh();
                                    hn[j] = (1.0 - z) * hh + z * hb[j];
                                }
                                hb.copy_from_slice(&hn);
                            } else {
                                // (r ⊙ H) R_h^T: the reset gate applies before the product.
                                let mut rh = vec![0f32; h];
                                let mut zs = vec![0f32; h];
                                let mut hn = vec![0f32; h];
                                for j in 0..h {
                                    zs[j] = sigmoid(xg[j] + rg[j]);
                                    rh[j] = sigmoid(xg[h + j] + rg[h + j]) * hb[j];
                                }
                                let rh_w = &rd[2 * h * h..][..h * h];
                                for j in 0..h {
                                    let row = &rh_w[j * h..][..h];
                                    let prod: f32 = row.iter().zip(&rh).map(|(a, b)| a * b).sum();
                                    let hh = (xg[2 * h + j] + prod).tanh();
                                    hn[j] = (1.0 - zs[j]) * hh + zs[j] * hb[j];
                                }
                                hb.copy_from_slice(&hn);
                            }
                        }
                        Cell::Rnn => {
                            for j in 0..h {
                                hb[j] = (xg[j] + rg[j]).tanh();
                            }
                        }
                    }
                    y[((t * d.dirs + dir) * batch + b) * h..][..h].copy_from_slice(hb);
                }
            }
            yh[dir * plane..][..plane].copy_from_slice(&hs);
            yc[dir * plane..][..plane].copy_from_slice(&cs);
        }
        let (ys, hs_shape) = if self.layout == 0 {
            (vec![seq, d.dirs, batch, h], vec![d.dirs, batch, h])
        } else {
            y = swap_y(&y, seq, d.dirs, batch, h);
            yh = swap01(&yh, d.dirs, batch, h);
            yc = swap01(&yc, d.dirs, batch, h);
            (vec![batch, seq, d.dirs, h], vec![batch, d.dirs, h])
        };
        let mut out = vec![Tensor::from_vec(ys, y)?, Tensor::from_vec(hs_shape.clone(), yh)?];
        if self.cell == Cell::Lstm {
            out.push(Tensor::from_vec(hs_shape, yc)?);
        }
        Ok(out)
    }

    fn facts(&self, inputs: &[Option<&ValueFact>]) -> Result<Vec<ValueFact>> {
        let op = self.cell.name();
        let x = required(inputs, 0, op, "X")?;
        for (i, name) in [(0, "X"), (1, "W"), (2, "R")] {
            expect_dtype(op, required(inputs, i, op, name)?, name, &[DType::F32])?;
        }
        if let Some(b) = optional(inputs, 3) {
            expect_dtype(op, b, "B", &[DType::F32])?;
        }
        if x.rank().is_some_and(|r| r != 3) {
            return Err(fact_error(op, format!("X must be 3-D, got {x}")));
        }
        let (seq, batch) = if x.rank().is_none() {
            (DimFact::Unknown, DimFact::Unknown)
        } else if self.layout == 0 {
            (x.dim(0), x.dim(1))
        } else {
            (x.dim(1), x.dim(0))
        };
        let (dirs, h) = (DimFact::Known(self.dirs()), DimFact::Known(self.hidden_size));
        let (y, state) = if self.layout == 0 {
            (vec![seq, dirs.clone(), batch.clone(), h.clone()], vec![dirs, batch, h])
        } else {
            (vec![batch.clone(), seq, dirs.clone(), h.clone()], vec![batch, dirs, h])
        };
        let f = |s: Vec<DimFact>| ValueFact::new(Some(DType::F32), Some(s));
        let mut out = vec![f(y), f(state.clone())];
        if self.cell == Cell::Lstm {
            out.push(f(state));
        }
        Ok(out)
    }
}

/// [a, b, rest] -> [b, a, rest].
fn swap01(v: &[f32], a: usize, b: usize, rest: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * rest..][..rest].copy_from_slice(&v[(i * b + j) * rest..][..rest]);
        }
    }
    out
}

/// Y from [seq, dirs, batch, h] to [batch, seq, dirs, h].
fn swap_y(v: &[f32], seq: usize, dirs: usize, batch: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for t in 0..seq {
        for d in 0..dirs {
            for b in 0..batch {
                out[((b * seq + t) * dirs + d) * h..][..h].copy_from_slice(&v[((t * dirs + d) * batch + b) * h..][..h]);
            }
        }
    }
    out
}

impl FromOnnx for Recurrent {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let cell = match cx.op_type {
            "LSTM" => Cell::Lstm,
            "GRU" => Cell::Gru,
            _ => Cell::Rnn,
        };
        let direction = match a.string("direction", "forward")?.as_str() {
            "forward" => Direction::Forward,
            "reverse" => Direction::Reverse,
            "bidirectional" => Direction::Bidirectional,
            other => return Err(a.unsupported(format!("direction '{other}'"))),
        };
        let hidden = a.int_opt("hidden_size")?;
        // Bounded so that the gate counts (4 * hidden_size, 2 * 4 * hidden_size) cannot overflow.
        let Some(hidden_size) = hidden.filter(|&h| h > 0 && h <= 1 << 31) else {
            return Err(a.unsupported(format!(
                "hidden_size {hidden:?} (a hidden_size attribute from 1 to 2^31 is required)"
            )));
        };
        let layout = a.int("layout", 0)?;
        if layout != 0 && layout != 1 {
            return Err(a.unsupported(format!("layout {layout}")));
        }
        if a.has("clip") {
            return Err(a.unsupported("clip is not supported"));
        }
        if a.has("activation_alpha") || a.has("activation_beta") {
            return Err(a.unsupported("activation_alpha / activation_beta are not supported"));
        }
        let dirs = if direction == Direction::Bidirectional { 2 } else { 1 };
        let activations = match &a.strings_opt("activations")? {
            None => None,
            Some(list) => {
                let default = cell.default_activations();
                let want: Vec<&str> = (0..dirs).flat_map(|_| default.iter().copied()).collect();
                let same = list.len() == want.len() && list.iter().zip(&want).all(|(x, y)| x.eq_ignore_ascii_case(y));
                if !same {
                    return Err(a.unsupported(format!(
                        "activations {list:?} (only the defaults {want:?} are supported)"
                    )));
                }
                Some(list.clone())
            }
        };
        let linear_before_reset = if cell == Cell::Gru {
            a.int("linear_before_reset", 0)? != 0
        } else {
            false
        };
        if cell == Cell::Lstm && a.int("input_forget", 0)? != 0 {
            return Err(a.unsupported("input_forget is not supported"));
        }
        Ok(Recurrent {
            cell,
            direction,
            hidden_size: hidden_size as usize,
            layout,
            linear_before_reset,
            activations,
        })
    }
}

impl Op for Recurrent {
    fn op_type(&self) -> &'static str {
        self.cell.name()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut out = vec![("hidden_size".to_string(), AttrValue::Int(self.hidden_size as i64))];
        match self.direction {
            Direction::Forward => {}
            Direction::Reverse => out.push(("direction".into(), AttrValue::String("reverse".into()))),
            Direction::Bidirectional => out.push(("direction".into(), AttrValue::String("bidirectional".into()))),
        }
        if self.layout != 0 {
            out.push(("layout".into(), AttrValue::Int(self.layout)));
        }
        if self.linear_before_reset {
            out.push(("linear_before_reset".into(), AttrValue::Int(1)));
        }
        if let Some(a) = &self.activations {
            out.push(("activations".into(), AttrValue::Strings(a.clone())));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        self.facts(inputs)
    }
    fn num_outputs(&self) -> usize {
        if self.cell == Cell::Lstm {
            3
        } else {
            2
        }
    }
}
