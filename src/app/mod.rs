//! Use cases: gather facts through the ports, decide with the core, then act (remediate,
//! deliver). Each is one module; the entry points ([`crate::cli`], [`crate::lambda`]) call them.
//!
//! May import: [`crate::core`] and [`crate::ports`]; never an adapter ([`crate::aws`]).

pub mod deliver;
pub mod diagnose;
pub mod gather;
pub mod org;
pub mod permissions;
pub mod preflight;
pub mod remediate;
pub mod resolve;
pub mod scan;

pub use diagnose::{act, handle_events, Plan};
