//! Reverse-mode automatic differentiation.
//!
//! A tensor computed from at least one *tracked* tensor (a variable, or a
//! tensor that itself has a recorded node) carries a [`Node`]: the op name,
//! its inputs, and a backward closure that maps the output gradient to the
//! inputs' gradients. Untracked inputs (data, masks, a frozen teacher's
//! output) get no node and no gradient, so nothing is computed for them.
//!
//! `backward` walks the graph once in reverse topological order; each
//! gradient is removed from the store as soon as its node has propagated it,
//! so peak memory stays close to the forward pass. Backward rules run in
//! no-grad mode (no higher-order gradients).

use crate::{Error, Result, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// What a backward closure receives.
#[derive(Debug)]
pub struct BackwardCtx<'a> {
    /// The op's output (its value; gradients are not tracked through it).
    pub out: &'a Tensor,
    /// The gradient of the loss with respect to `out`.
    pub grad: &'a Tensor,
    /// For each input, whether a gradient is wanted.
    pub needs: &'a [bool],
}

pub(crate) type BackwardFn = Box<dyn Fn(&BackwardCtx<'_>) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// How a tracked tensor was computed.
pub(crate) struct Node {
    pub op: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: BackwardFn,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({}, {} inputs)", self.op, self.inputs.len())
    }
}

/// Drops the graph below a node without recursion. The derived drop of a
/// node drops its inputs, whose nodes drop theirs, one stack frame per op
/// of the chain: a graph tens of thousands of ops deep (a long loop under
/// grad mode) overflowed the stack. Here each input that this node held
/// the last handle to gives up its own inputs to an explicit stack
/// instead. The backward rule goes first: rules often keep handles to
/// their inputs too, and if the rule held the last one, dropping it would
/// recurse as before.
impl Drop for Node {
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.backward, Box::new(|_| Ok(Vec::new()))));
        let mut stack = std::mem::take(&mut self.inputs);
        while let Some(t) = stack.pop() {
            stack.extend(t.into_graph_inputs());
        }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Disables graph recording on this thread until the guard is dropped
/// (inference, EMA and optimizer updates).
#[must_use = "recording resumes when the guard is dropped"]
#[derive(Debug)]
pub struct NoGradGuard {
    prev: bool,
}

/// Starts a no-grad scope; see [`NoGradGuard`].
pub fn no_grad() -> NoGradGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { prev }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Gradients of the variables a loss depends on, keyed by tensor id.
#[derive(Debug, Default)]
pub struct GradStore(HashMap<usize, Tensor>);

impl GradStore {
    /// The gradient of `var`, if the loss depends on it.
    pub fn get(&self, var: &Tensor) -> Option<&Tensor> {
        self.0.get(&var.id())
    }
    /// Takes the gradient of `var` out of the store.
    pub fn remove(&mut self, var: &Tensor) -> Option<Tensor> {
        self.0.remove(&var.id())
    }
    /// Sets (replaces) the gradient of `var`.
    pub fn insert(&mut self, var: &Tensor, grad: Tensor) {
        self.0.insert(var.id(), grad);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Tracked tensors reachable from `root`, inputs after the tensors that use
/// them reversed: index 0 is `root`, every node comes before its inputs.
fn sorted_nodes(root: &Tensor) -> Vec<Tensor> {
    // Iterative post-order DFS (deep graphs must not overflow the stack).
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack: Vec<(Tensor, usize)> = vec![(root.clone(), 0)];
    visited.insert(root.id());
    while let Some((t, child)) = stack.pop() {
        let inputs = t.node().map(|n| n.inputs.as_slice()).unwrap_or(&[]);
        if child < inputs.len() {
            let next = inputs[child].clone();
            stack.push((t, child + 1));
            if next.is_tracked() && visited.insert(next.id()) {
                stack.push((next, 0));
            }
        } else {
            order.push(t);
        }
    }
    order.reverse();
    order
}

impl Tensor {
    /// Backpropagates from this scalar and returns the gradients of every
    /// variable it depends on.
    pub fn backward(&self) -> Result<GradStore> {
        if self.elem_count() != 1 {
            return Err(Error::Backward(format!("the loss must be a scalar, got shape {:?}", self.shape())));
        }
        if !self.is_tracked() {
            return Err(Error::Backward("the loss does not depend on any variable".into()));
        }
        let _guard = no_grad();
        let mut pending: HashMap<usize, Tensor> = HashMap::new();
        pending.insert(self.id(), self.ones_like()?);
        let mut result = GradStore::default();
        for t in sorted_nodes(self) {
            let Some(grad) = pending.remove(&t.id()) else { continue };
            if t.is_var() {
                result.0.insert(t.id(), grad);
                continue;
            }
            let Some(node) = t.node() else { continue };
            let needs: Vec<bool> = node.inputs.iter().map(Tensor::is_tracked).collect();
            let out = t.detach();
            let grads = (node.backward)(&BackwardCtx { out: &out, grad: &grad, needs: &needs })?;
            for ((input, g), need) in node.inputs.iter().zip(grads).zip(&needs) {
                let Some(g) = g else { continue };
                if !need {
                    continue;
                }
                if g.shape() != input.shape() {
                    return Err(Error::Backward(format!(
                        "{}: gradient of shape {:?} for an input of shape {:?}",
                        node.op,
                        g.shape(),
                        input.shape()
                    )));
                }
                match pending.remove(&input.id()) {
                    Some(acc) => pending.insert(input.id(), acc.add(&g)?),
                    None => pending.insert(input.id(), g),
                };
            }
        }
        Ok(result)
    }
}
