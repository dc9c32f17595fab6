//! The CURVE mesh between the router and its agents.
//!
//! ZeroMQ sockets are not thread-safe and are blocking, so each endpoint is a dedicated thread
//! that owns its sockets and talks to async code through channels: inbound frames and events go
//! out on a tokio channel; outbound frames come in over an in-process PUSH/PULL pair, so one
//! `zmq::poll` waits on the network and on outbound work at once.
//!
//! Security: the router endpoint is a CURVE server whose ZAP handler (same context, bound before
//! the ROUTER socket) accepts only keys on the [`AllowList`]. ZAP runs only at handshake, so every
//! inbound message's `User-Id` (the client's key) is checked against the allow-list again: that is
//! how removing a key cuts a live session.

mod allow_list;
mod client;
mod error;
mod server;
mod socket;
mod zap;

pub use allow_list::AllowList;
pub use client::{ClientEvent, MeshClient};
pub use error::MeshError;
pub use server::{DropReason, InboundCap, MeshEvent, MeshHandle, MeshRekey, MeshServer};
pub use socket::{ClientKeys, configure_client_socket};
