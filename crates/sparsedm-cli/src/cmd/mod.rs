//! One module per subcommand.

pub mod demo;
pub mod fid;
pub mod forward;
pub mod inspect;
pub mod macs;
pub mod prune;
pub mod sample;
pub mod train;
