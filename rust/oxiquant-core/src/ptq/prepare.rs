//! Step 1, `prepare_network`: fold constants, fold BatchNormalization into the Conv/Gemm
//! before it, fold Gemm's alpha/beta, remove Identity and Dropout, then list the nodes that
//! will stay in float. The float function is unchanged.

use super::affine::AffineParams;
use super::classify::Class;
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::{Dropout, Gemm, Identity, QOp};
use crate::passes::{fold_batchnorms, fold_constants};

/// What `prepare` changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PrepareReport {
    pub folded_constants: usize,
    pub folded_batchnorms: usize,
    pub removed_passthroughs: usize,
}

pub fn prepare(graph: &mut Graph, state: &mut PtqState) -> Result<PrepareReport> {
    state.expect("prepare_network", Stage::Float, &[])?;
    if let Some(n) = graph.nodes.iter().find(|n| n.op.is::<QOp>()) {
        return Err(Error::InvalidArgument(format!(
            "prepare_network: the model is already quantized (node '{}' is a {}); it runs on the integer engine as loaded, quantize its float original instead",
            n.name,
            n.op.op_type()
        )));
    }
    // Some refusals (a Dropout whose training_mode only folds to a constant true) come
    // after folding has already edited the graph.
    super::transactional(graph, state, prepare_in_place)
}

fn prepare_in_place(graph: &mut Graph, state: &mut PtqState) -> Result<PrepareReport> {
    let mut report = PrepareReport {
        folded_constants: fold_constants(graph)?,
        ..Default::default()
    };
    report.removed_passthroughs = remove_passthroughs(graph)?;
    report.folded_batchnorms = fold_batchnorms(graph)?;
    fold_gemm_alpha_beta(graph)?;
    graph.prune();
    let classes = super::insert_scaling::node_classes(graph, &state.excluded);
    state.float_nodes.clear();
    for n in &graph.nodes {
        if let Some(Class::FloatIsland(why)) = classes.get(&n.name) {
            state
                .float_nodes
                .push((n.name.clone(), n.op.op_type().to_string(), why.clone()));
        }
    }
    state.stage = Stage::Prepared;
    Ok(report)
}

fn remove_passthroughs(graph: &mut Graph) -> Result<usize> {
    let mut removed = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if (graph.nodes[i].op.is::<Identity>() || graph.nodes[i].op.is::<Dropout>())
            && graph.nodes[i].outputs.len() == 1
        {
            // A Dropout asking for training is an error at run time; never drop one silently.
            if graph.nodes[i].op.is::<Dropout>() && graph.nodes[i].inputs.len() > 2 {
                let n = &graph.nodes[i];
                let training = n.inputs[2].as_str();
                if training.is_empty()
                    || graph
                        .initializers
                        .get(training)
                        .is_some_and(|t| t.to_f32_vec() == [0.0])
                {
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "node '{}' (Dropout): training_mode is not a constant false; only inference graphs can be quantized",
                        n.name
                    )));
                }
            }
            graph.remove_passthrough(i)?;
            removed += 1;
        } else {
            i += 1;
        }
    }
    Ok(removed)
}

fn fold_gemm_alpha_beta(graph: &mut Graph) -> Result<()> {
    for i in 0..graph.nodes.len() {
        let Some(g) = graph.nodes[i].op.downcast_ref::<Gemm>() else {
            continue;
        };
        if (g.alpha == 1.0 && g.beta == 1.0) || g.trans_a {
            continue;
        }
        let (alpha, beta) = (g.alpha, g.beta);
        let Ok(mut a) = AffineParams::read(graph, i) else {
            continue;
        };
        if a.has_bias && a.bias.len() != a.channels {
            continue;
        }
        a.for_each_mut(|_, w| *w *= alpha);
        a.bias.iter_mut().for_each(|b| *b *= beta);
        a.write(graph, i)?;
        if let Some(g) = graph.nodes[i].op.downcast_mut::<Gemm>() {
            g.alpha = 1.0;
            g.beta = 1.0;
        }
    }
    Ok(())
}
