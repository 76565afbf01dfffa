//! HTTP/1 on bytes, without I/O: the chunked coding (`chunked`), the header fields that decide
//! anything (`fields`) and how a response's body is delimited (`framing`). Below both the
//! proxy (`proxy::h1` reads and writes connections with it) and the plugins (http-log reads
//! its receiver's answers with it).

pub mod chunked;
pub(crate) mod fields;
pub(crate) mod framing;
