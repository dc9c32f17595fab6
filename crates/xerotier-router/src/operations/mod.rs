//! Fleet-wide emergency operations (issue 13 item 4): a CURVE rotation of many agents in
//! waves, and blast-radius revocations of join keys and agents, each a server-side record with
//! its plan fixed at creation. `service` is the domain (validate, plan, create, cancel,
//! resume), `executor` runs one operation through the existing services, `runner` is the
//! background task that claims operations, `handlers` and `views` the HTTP surface.

pub mod executor;
pub mod handlers;
pub mod runner;
pub mod service;
pub mod views;

pub use service::OperationService;
