//! Optional step after `prepare_network`: nodes the user keeps in float. Each becomes a float
//! island (`insert_scaling` puts a dequantizer on its activation inputs and a requantizer
//! after it, calibrated like any island): the integer engine runs the float op and the
//! exports keep it a float node between DequantizeLinear and QuantizeLinear.

use super::classify::Class;
use super::insert_scaling::node_classes;
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;

/// The reason listed in `float_nodes` for an excluded node.
pub const REASON: &str = "excluded from quantization by the user (exclude)";

/// Marks `names` as kept in float. Every name must be a node that reads an activation.
pub fn exclude(graph: &Graph, state: &mut PtqState, names: &[String]) -> Result<()> {
    state.expect("exclude_layers", Stage::Prepared, &[])?;
    // The classes the pipeline will use, float merges included.
    let classes = node_classes(graph, &state.excluded);
    for name in names {
        let Some(idx) = graph.node_index(name) else {
            return Err(Error::InvalidArgument(format!(
                "exclude: the model has no node '{name}' (after prepare_network; `oxiquant inspect` lists the names)"
            )));
        };
        let n = &graph.nodes[idx];
        match classes.get(name) {
            None | Some(Class::Passive | Class::Scaling) => {
                return Err(Error::InvalidArgument(format!(
                    "exclude: node '{name}' ({}) reads no activation: there is nothing to keep in float",
                    n.op.op_type()
                )))
            }
            Some(Class::FloatIsland(_)) => {} // already float
            _ => {
                if state.excluded.insert(name.clone()) {
                    state
                        .float_nodes
                        .push((name.clone(), n.op.op_type().to_string(), REASON.to_string()));
                }
            }
        }
    }
    Ok(())
}
