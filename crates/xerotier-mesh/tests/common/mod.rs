//! What the mesh tests share.

use xerotier_proto::mesh::Frame;

/// The hello an agent sends first on every connection.
pub fn hello(agent_id: &str) -> Frame {
    Frame::Hello {
        agent_id: agent_id.into(),
        xem_version: "test".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
    }
}
