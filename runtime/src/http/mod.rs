//! HTTP/1.1, split by responsibility: parsing a request head, decoding chunked bodies, encoding
//! responses, and the one table from error kind to status. These are pure functions over bytes:
//! nothing here knows of sockets, workers or slots.

pub mod chars;
pub mod chunked;
pub mod date;
pub mod encode;
pub mod error;
pub mod parse;
pub mod target;

pub use error::ErrorKind;
