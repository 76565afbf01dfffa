//! HTTP/1 on bytes: what the direct path needs to read and write the protocol without a header
//! map — head limits and request framing (`limits`), the upstream's answer (`response`), the
//! client's body on its way upstream (`request_body`), and writing to the client (`write`),
//! over the codec in `crate::codec` (fields, chunked coding, response framing). The engine
//! that drives a connection with them is `super::direct`.

pub(crate) mod limits;
pub(crate) mod request_body;
pub(crate) mod response;
pub(crate) mod rewind;
pub(crate) mod write;
