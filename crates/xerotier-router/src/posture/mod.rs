//! Credential posture: every credential of every kind judged against the rotation policy
//! (`xerotier-posture`), served as a report (`handlers`), and watched by a background monitor
//! that sets the gauges and announces each transition once (`monitor`).

pub mod handlers;
pub mod monitor;
pub mod service;

pub use service::{PostureFilter, PostureRow, PostureService};
