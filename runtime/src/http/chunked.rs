//! A streaming decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1). Strict where
//! leniency breaks framing: sizes are hex digits only (at most 16), every line ends in CRLF,
//! chunk data is followed by CRLF exactly. Extensions and trailers are skipped, within bounds.

use super::error::ErrorKind;

/// Chunk sizes have at most this many hex digits (a u64).
const SIZE_DIGITS_MAX: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Clone, Copy, Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    size_digits: u8,
    remaining: u64,
    extension_bytes: usize,
    trailer_bytes: usize,
    /// `chunk_extension_size_max`: bytes after a chunk size's `;`, per chunk.
    extension_bytes_max: usize,
    /// `trailer_size_max`: bytes of all trailer lines (without their CRLFs).
    trailer_bytes_max: usize,
}

impl ChunkedDecoder {
    pub fn new(extension_bytes_max: usize, trailer_bytes_max: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            size_digits: 0,
            remaining: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            extension_bytes_max,
            trailer_bytes_max,
        }
    }
}

/// Progress of one [`ChunkedDecoder::decode`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub consumed: usize,
    pub produced: usize,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` into `output`. Stops at the end of the body, of `input`, or with
    /// [`ErrorKind::BodyTooLarge`] when the data does not fit in `output`.
    pub fn decode(&mut self, input: &[u8], output: &mut [u8]) -> Result<Progress, ErrorKind> {
        let mut progress = Progress { consumed: 0, produced: 0 };
        while progress.consumed < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let available = input.len() - progress.consumed;
                let room = output.len() - progress.produced;
                if room == 0 {
                    return Err(ErrorKind::BodyTooLarge);
                }
                let take = (self.remaining.min(available as u64) as usize).min(room);
                output[progress.produced..progress.produced + take]
                    .copy_from_slice(&input[progress.consumed..progress.consumed + take]);
                progress.consumed += take;
                progress.produced += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[progress.consumed])?;
            progress.consumed += 1;
        }
        Ok(progress)
    }

    fn step(&mut self, byte: u8) -> Result<(), ErrorKind> {
        let expect = |wanted: u8, next: State| {
            if byte == wanted {
                Ok(next)
            } else {
                Err(ErrorKind::BadChunk)
            }
        };
        self.state = match self.state {
            State::Size => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if self.size_digits == SIZE_DIGITS_MAX {
                        return Err(ErrorKind::BadChunk);
                    }
                    let digit = (byte as char).to_digit(16).expect("matched a hex digit");
                    self.size = self.size << 4 | u64::from(digit);
                    self.size_digits += 1;
                    State::Size
                }
                b';' | b' ' | b'\t' if self.size_digits > 0 => State::Extension,
                b'\r' if self.size_digits > 0 => State::SizeLf,
                _ => return Err(ErrorKind::BadChunk),
            },
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\n' => return Err(ErrorKind::BadChunk),
                _ => {
                    self.extension_bytes += 1;
                    if self.extension_bytes > self.extension_bytes_max {
                        return Err(ErrorKind::BadChunk);
                    }
                    State::Extension
                }
            },
            State::SizeLf => {
                expect(b'\n', State::Data)?;
                self.remaining = self.size;
                self.extension_bytes = 0;
                (self.size, self.size_digits) = (0, 0);
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::DataCr => expect(b'\r', State::DataLf)?,
            State::DataLf => expect(b'\n', State::Size)?,
            State::TrailerStart => match byte {
                b'\r' => State::EndLf,
                _ => self.count_trailer(State::Trailer)?,
            },
            State::Trailer => match byte {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(ErrorKind::BadChunk),
                _ => self.count_trailer(State::Trailer)?,
            },
            State::TrailerLf => expect(b'\n', State::TrailerStart)?,
            State::EndLf => expect(b'\n', State::Done)?,
            State::Data | State::Done => unreachable!("handled by decode"),
        };
        Ok(())
    }

    fn count_trailer(&mut self, next: State) -> Result<State, ErrorKind> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.trailer_bytes_max {
            return Err(ErrorKind::HeadersTooLarge);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], room: usize) -> Result<Vec<u8>, ErrorKind> {
        let mut decoder = ChunkedDecoder::new(4096, 8192);
        let mut output = vec![0; room];
        let mut produced = 0;
        // Feed one byte at a time: the decoder must not care how input is split.
        for (index, byte) in input.iter().enumerate() {
            let progress = decoder.decode(std::slice::from_ref(byte), &mut output[produced..])?;
            produced += progress.produced;
            if decoder.is_done() {
                assert_eq!(index + 1, input.len(), "stops right after the last CRLF");
            }
        }
        assert!(decoder.is_done(), "body incomplete");
        output.truncate(produced);
        Ok(output)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"5;name=v\r\nhello\r\n7\r\n, world\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(decode_all(body, 64).unwrap(), b"hello, world");
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"g\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b";x\r\n",
        ] {
            let mut decoder = ChunkedDecoder::new(4096, 8192);
            assert!(decoder.decode(bad, &mut [0; 64]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_larger_than_room_is_too_large() {
        assert_eq!(decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 9), Err(ErrorKind::BodyTooLarge));
        assert!(decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 10).is_ok());
    }
}
