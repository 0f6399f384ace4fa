//! The `chunked` target: `ChunkedDecoder` against the reference decoder of [`crate::reference`].
//!
//! Input: four bytes of settings, then the body bytes.
//! - byte 0, `split`: 0 feeds the body in one call; `n` > 0 feeds it in pieces of 1 to `n`
//!   bytes, lengths drawn from a generator seeded by `n` and the body length (1: byte by byte).
//! - byte 1, `room`: the output room is `room * 16` bytes (255: as many as the body has).
//! - byte 2: `chunk_extension_size_max`.
//! - byte 3: `trailer_size_max`.
//!
//! A printable prefix such as `~~~~` (pieces of up to 126 bytes, 2016 bytes of room, limits
//! 126) keeps seed files readable.
//!
//! Property: both decoders agree on the outcome. A complete body must have the same length
//! (what follows it is the next request) and the same data; a valid prefix must not be
//! rejected and must have decoded the same data so far; a rejected input must not complete.
//! The decoder may notice an error later than the reference does (it is still waiting for
//! bytes), but never completes a body the reference rejects. Also: `decode` never consumes
//! more than it is given, never produces more than its room, and consumes a whole piece
//! unless the body ends inside it.

use crate::reference::{self, Limits, Outcome};
use crate::show;
use cella::http::chunked::ChunkedDecoder;

/// Bytes of settings before the body.
pub const SETTINGS_BYTES: usize = 4;

/// Parses the settings, or `None` when the input is shorter than them.
pub fn split_input(data: &[u8]) -> Option<(u8, Limits, &[u8])> {
    let (settings, body) = data.split_at_checked(SETTINGS_BYTES)?;
    let data_bytes_max =
        if settings[1] == u8::MAX { body.len() } else { usize::from(settings[1]) * 16 };
    let limits = Limits {
        extension_bytes_max: usize::from(settings[2]),
        trailer_bytes_max: usize::from(settings[3]),
        data_bytes_max,
    };
    Some((settings[0], limits, body))
}

/// Runs one input; panics when the property does not hold.
pub fn check(data: &[u8]) {
    let Some((split, limits, body)) = split_input(data) else { return };
    let expected = reference::decode(body, limits);
    let actual = run_decoder(body, split, limits);
    let agree = match (&expected, &actual) {
        (Outcome::Rejected, Outcome::Rejected | Outcome::Incomplete { .. }) => true,
        (expected, actual) => expected == actual,
    };
    assert!(
        agree,
        "chunked decoder disagrees with the reference\n  body: {}\n  split {split}, {limits:?}\n  reference: {}\n  decoder:   {}",
        show(body),
        describe(&expected),
        describe(&actual),
    );
}

/// Feeds `body` to a `ChunkedDecoder` in the pieces `split` asks for.
fn run_decoder(body: &[u8], split: u8, limits: Limits) -> Outcome {
    let mut decoder = ChunkedDecoder::new(limits.extension_bytes_max, limits.trailer_bytes_max);
    let mut output = vec![0u8; limits.data_bytes_max];
    let mut produced = 0;
    let mut consumed = 0;
    // An empty call changes nothing.
    let progress = decoder.decode(&[], &mut output).expect("an empty input is no error");
    assert_eq!((progress.consumed, progress.produced), (0, 0), "an empty input is a no-op");
    for piece in Pieces::new(body, split) {
        let room = output.len() - produced;
        let progress = match decoder.decode(piece, &mut output[produced..]) {
            Ok(progress) => progress,
            Err(_) => return Outcome::Rejected,
        };
        assert!(progress.consumed <= piece.len(), "consumed past its input");
        assert!(progress.produced <= room, "produced past its room");
        assert!(progress.produced <= progress.consumed, "produced more than it consumed");
        produced += progress.produced;
        consumed += progress.consumed;
        if decoder.is_done() {
            output.truncate(produced);
            return Outcome::Complete { body_bytes: consumed, data: output };
        }
        assert_eq!(progress.consumed, piece.len(), "stopped inside a piece before the end");
    }
    output.truncate(produced);
    Outcome::Incomplete { data: output }
}

/// Splits a body into pieces of 1 to `split` bytes (all of it at once when `split` is 0).
struct Pieces<'b> {
    rest: &'b [u8],
    split: u8,
    state: u32,
}

impl<'b> Pieces<'b> {
    fn new(body: &'b [u8], split: u8) -> Self {
        let state = (u32::from(split) << 16 | body.len() as u32 & 0xFFFF) | 1;
        Pieces { rest: body, split, state }
    }
}

impl<'b> Iterator for Pieces<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let len = if self.split == 0 {
            self.rest.len()
        } else {
            // xorshift32: cheap, and the same pieces for the same input every time.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            1 + (self.state % u32::from(self.split)) as usize
        };
        let (piece, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Complete { body_bytes, data } => {
            format!("complete after {body_bytes} bytes, data {}", show(data))
        }
        Outcome::Incomplete { data } => format!("incomplete, data so far {}", show(data)),
        Outcome::Rejected => "rejected".to_string(),
    }
}
