//! `Linear` and `Conv2d` hold their weight once, in their `SparseSlot`: the
//! layer's `weight()`, the slot's and the `ParamStore` entry are one variable,
//! the state-dict names are unchanged (`<layer>.weight`, `<layer>.bias`), and
//! whatever changes the weight through the store (strict checkpoint loading)
//! or the slot (ASP pruning in place) is what the layer's forward pass uses.

use sparsedm_layers::{Conv2d, Conv2dConfig, Linear, NmPattern, ParamStore, SparseMode};
use sparsedm_tensor::{Device, Tensor};

const DEV: Device = Device::Cpu;

fn names(store: &ParamStore) -> Vec<String> {
    store.state_dict().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn linear_weight_is_one_variable_under_its_state_dict_name() {
    let store = ParamStore::new(DEV, 1);
    let fc = Linear::new(&store.pp("fc"), 8, 4, true).unwrap();
    assert_eq!(names(&store), ["fc.bias", "fc.weight"]);
    let entry = store.get("fc.weight").unwrap();
    assert_eq!(fc.weight().id(), entry.id());
    assert_eq!(fc.slot().weight().id(), entry.id());
    let (name, slot) = store.sparse_slots().pop().unwrap();
    assert_eq!(name, "fc");
    assert_eq!(slot.weight().id(), entry.id());
    assert_eq!((fc.in_dim(), fc.out_dim()), (8, 4));
}

#[test]
fn conv2d_weight_is_one_variable_under_its_state_dict_name() {
    let store = ParamStore::new(DEV, 2);
    let conv = Conv2d::new(&store.pp("conv"), 4, 2, Conv2dConfig::square(3, 1, 1).no_bias()).unwrap();
    assert_eq!(names(&store), ["conv.weight"]);
    let entry = store.get("conv.weight").unwrap();
    assert_eq!(conv.weight().id(), entry.id());
    assert_eq!(conv.slot().weight().id(), entry.id());
    assert_eq!(conv.weight().shape(), &[2, 4, 3, 3]);
}

#[test]
fn a_loaded_checkpoint_reaches_the_forward_pass() {
    let store = ParamStore::new(DEV, 3);
    let fc = Linear::new(&store.pp("fc"), 2, 2, true).unwrap();
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], &DEV).unwrap();
    let b = Tensor::from_vec(vec![0.5, -0.5], &[2], &DEV).unwrap();
    store.load_tensors("<test>", vec![("fc.weight".into(), w), ("fc.bias".into(), b)], |_| false).unwrap();
    let x = Tensor::from_vec(vec![1.0, 1.0], &[1, 2], &DEV).unwrap();
    assert_eq!(fc.forward(&x).unwrap().to_vec_f32().unwrap(), [3.5, 6.5]);
    assert_eq!(fc.weight().to_vec_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn pruning_in_place_is_seen_through_the_layer_and_the_store() {
    let store = ParamStore::new(DEV, 4);
    let fc = Linear::new(&store.pp("fc"), 4, 1, false).unwrap();
    let w = Tensor::from_vec(vec![0.1, -0.4, 0.3, -0.2], &[1, 4], &DEV).unwrap();
    store.load_tensors("<test>", vec![("fc.weight".into(), w)], |_| false).unwrap();
    let pattern: NmPattern = "2:4".parse().unwrap();
    fc.slot().set_mode(SparseMode::Fixed { pattern, transposable: false }).unwrap();
    let pruned = [0.0, -0.4, 0.3, 0.0];
    assert_eq!(fc.weight().to_vec_f32().unwrap(), pruned);
    assert_eq!(store.get("fc.weight").unwrap().to_vec_f32().unwrap(), pruned);
}
