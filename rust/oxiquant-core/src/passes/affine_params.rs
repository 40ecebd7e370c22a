//! Reading and rewriting the parameters of an affine node (Conv, Gemm, MatMul) by output
//! channel: for BatchNorm folding here (`fold_batchnorm`), and for the PTQ passes
//! (parameter normalization, quantization), which reach it as `ptq::affine`.

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::{Conv, Gemm, MatMul};
use crate::tensor::Tensor;

/// How the output channels sit in the weight tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Channel `c` is the contiguous block `c` (Conv `[M, C/g, k...]`, Gemm with transB).
    Rows,
    /// Channel `c` is column `c` of a `[K, N]` matrix (Gemm without transB, MatMul).
    Columns,
}

pub struct AffineParams {
    pub weight: Vec<f32>,
    pub weight_shape: Vec<usize>,
    pub layout: Layout,
    pub channels: usize,
    /// One value per output channel (zeros when the node has no bias).
    pub bias: Vec<f32>,
    pub has_bias: bool,
    /// Rank of the node's output (for laying out per-channel factors after it).
    pub out_rank: usize,
    /// Whether a per-channel factor along axis 1 of the output is meaningful.
    pub per_channel_ok: bool,
}

impl AffineParams {
    pub fn read(graph: &Graph, idx: usize) -> Result<AffineParams> {
        let n = &graph.nodes[idx];
        let get = |slot: usize| -> Option<&Tensor> {
            n.inputs
                .get(slot)
                .filter(|s| !s.is_empty())
                .and_then(|s| graph.initializers.get(s))
        };
        let w = get(1).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "node '{}' ({}): the weight is not a constant",
                n.name,
                n.op.op_type()
            ))
        })?;
        let shape = w.shape().to_vec();
        let op = n.op.as_ref();
        let gemm = op.downcast_ref::<Gemm>();
        let (layout, channels, out_rank, per_channel_ok) = match gemm {
            _ if op.is::<Conv>() && shape.len() >= 3 => (Layout::Rows, shape[0], shape.len(), true),
            Some(g) if shape.len() == 2 => {
                if g.trans_b {
                    (Layout::Rows, shape[0], 2, true)
                } else {
                    (Layout::Columns, shape[1], 2, true)
                }
            }
            // A MatMul output may be [B, T, N]: its channels are the last axis, not axis 1,
            // so it keeps per-tensor scales.
            _ if op.is::<MatMul>() && shape.len() == 2 => (Layout::Columns, shape[1], 0, false),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "node '{}' ({}): not an affine node with a weight of the expected rank (got {shape:?})",
                    n.name,
                    op.op_type()
                )))
            }
        };
        let bias_t = if n.op.is::<MatMul>() { None } else { get(2) };
        let bias = match bias_t {
            None => vec![0.0; channels],
            Some(b) if b.len() == channels => b.to_f32_vec(),
            Some(b) if b.len() == 1 => vec![b.to_f32_vec()[0]; channels],
            Some(b) => {
                return Err(Error::shape(format!(
                    "node '{}' ({}): bias of shape {:?} for {channels} output channels",
                    n.name,
                    n.op.op_type(),
                    b.shape()
                )))
            }
        };
        Ok(AffineParams {
            weight: w.to_f32_vec(),
            weight_shape: shape,
            layout,
            channels,
            has_bias: bias_t.is_some(),
            bias,
            out_rank,
            per_channel_ok,
        })
    }

    /// Calls `f(channel, weight)` for every weight element.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(usize, &mut f32)) {
        let c = self.channels.max(1);
        match self.layout {
            Layout::Rows => {
                let block = self.weight.len() / c;
                for (i, w) in self.weight.iter_mut().enumerate() {
                    f(i / block.max(1), w);
                }
            }
            Layout::Columns => {
                for (i, w) in self.weight.iter_mut().enumerate() {
                    f(i % c, w);
                }
            }
        }
    }

    /// `max |W|` per output channel.
    pub fn channel_max_abs(&mut self) -> Vec<f32> {
        let mut m = vec![0f32; self.channels];
        self.for_each_mut(|c, w| m[c] = m[c].max(w.abs()));
        m
    }

    /// Weights of channel `c` (copied).
    pub fn channel(&self, c: usize) -> Vec<f32> {
        let ch = self.channels.max(1);
        match self.layout {
            Layout::Rows => {
                let block = self.weight.len() / ch;
                self.weight[c * block..(c + 1) * block].to_vec()
            }
            Layout::Columns => self.weight.iter().skip(c).step_by(ch).copied().collect(),
        }
    }

    /// Writes weight and bias back. Initializers shared with another node are not touched:
    /// the node gets fresh ones.
    pub fn write(self, graph: &mut Graph, idx: usize) -> Result<()> {
        let w = Tensor::from_vec(self.weight_shape.clone(), self.weight)?;
        set_input_constant(graph, idx, 1, "weight", w);
        if self.has_bias || self.bias.iter().any(|&b| b != 0.0) {
            if graph.nodes[idx].op.is::<MatMul>() {
                return Err(Error::InvalidArgument(format!(
                    "node '{}' (MatMul) cannot take a bias",
                    graph.nodes[idx].name
                )));
            }
            let b = Tensor::from_vec(vec![self.channels], self.bias)?;
            set_input_constant(graph, idx, 2, "bias", b);
        }
        Ok(())
    }
}

/// Sets input `slot` of node `idx` to a constant, in place when no other reader shares the
/// initializer, else under a fresh name.
pub fn set_input_constant(graph: &mut Graph, idx: usize, slot: usize, what: &str, t: Tensor) {
    let current = graph.nodes[idx].inputs.get(slot).cloned().unwrap_or_default();
    let shared = current.is_empty()
        || graph.consumers(&current).len() > 1
        || graph.is_graph_output(&current)
        || graph.inputs.iter().any(|i| i.name == current);
    let name = if shared {
        let base = format!("{}_{what}", graph.nodes[idx].name);
        graph.fresh_name(&base)
    } else {
        current
    };
    while graph.nodes[idx].inputs.len() <= slot {
        graph.nodes[idx].inputs.push(String::new());
    }
    graph.nodes[idx].inputs[slot] = name.clone();
    graph.initializers.insert(name, t);
}
