//! BatchNormalization folded into the Conv or Gemm before it: a generic transform that PTQ's
//! first step (`ptq::prepare`) and the float inference plan (`inference_plan`) both apply.

use super::affine_params::AffineParams;
use crate::error::Result;
use crate::graph::Graph;
use crate::ops::nn::batch_norm_affine;
use crate::ops::{BatchNorm, Conv, Gemm};

/// `BN(affine(x))` becomes `affine'(x)` when the affine node's only reader is the BN.
pub fn fold_batchnorms(graph: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let Some(&BatchNorm { epsilon }) = graph.nodes[i].op.downcast_ref::<BatchNorm>() else {
            i += 1;
            continue;
        };
        let bn = graph.nodes[i].clone();
        let params: Option<Vec<Vec<f32>>> = bn.inputs[1..]
            .iter()
            .map(|v| graph.initializers.get(v).map(|t| t.to_f32_vec()))
            .collect();
        let producer = bn.inputs.first().and_then(|x| graph.producer(x));
        let foldable = match (producer, &params) {
            (Some(p), Some(ps)) if ps.len() == 4 => {
                let x = &bn.inputs[0];
                (graph.nodes[p].op.is::<Conv>() || graph.nodes[p].op.is::<Gemm>())
                    && graph.consumers(x).len() == 1
                    && !graph.is_graph_output(x)
                    && AffineParams::read(graph, p).is_ok_and(|a| a.channels == ps[0].len())
            }
            _ => false,
        };
        let (Some(p), Some(ps), true) = (producer, params, foldable) else {
            i += 1;
            continue;
        };
        let (mul, add) = batch_norm_affine(&ps[0], &ps[1], &ps[2], &ps[3], epsilon);
        let mut a = AffineParams::read(graph, p)?;
        a.for_each_mut(|c, w| *w *= mul[c]);
        for (c, b) in a.bias.iter_mut().enumerate() {
            *b = *b * mul[c] + add[c];
        }
        a.has_bias = true;
        a.write(graph, p)?;
        // The affine node now writes the BN's output.
        graph.nodes[p].outputs[0] = bn.outputs[0].clone();
        graph.nodes.remove(i);
        folded += 1;
    }
    Ok(folded)
}
