//! What arrives on the CURVE mesh: any bytes through `mesh::decode` (the router's I/O thread and
//! the XEM's session decode every message with it), and the signed rotation acknowledgement's
//! payload through `decode_ack_payload`. A frame that decodes must survive encode → decode
//! unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xerotier_proto::mesh::{self, Frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = mesh::decode(data) {
        let again = mesh::decode(&mesh::encode(&frame)).expect("an encoded frame decodes");
        assert_eq!(again, frame, "encode/decode round trip");
        match &frame {
            Frame::Manifest { manifest, .. } => {
                let _ = manifest.hash();
            }
            Frame::RotateAck { payload, .. } => {
                if let Ok(body) = mesh::decode_ack_payload(payload) {
                    let again = mesh::decode_ack_payload(&mesh::encode_ack_payload(&body));
                    assert_eq!(again.as_ref(), Ok(&body), "ack payload round trip");
                }
            }
            _ => {}
        }
    }
    if let Ok(body) = mesh::decode_ack_payload(data) {
        let again = mesh::decode_ack_payload(&mesh::encode_ack_payload(&body));
        assert_eq!(again.as_ref(), Ok(&body), "ack payload round trip");
    }
});
