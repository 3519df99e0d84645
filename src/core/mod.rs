//! The pure core: what a launch failure is, how it is decided, and how the answer is written.
//!
//! No I/O, no clock reads, no SDK types: every function here takes facts and returns values.
//! May import: std, serde, chrono, thiserror and its own submodules — nothing else of the crate.

pub mod arn;
pub mod cloudtrail;
pub mod decide;
pub mod event;
pub mod facts;
pub mod fixes;
pub mod message;
pub mod outbox;
pub mod policy;
pub mod render;
pub mod report;
pub mod text;
