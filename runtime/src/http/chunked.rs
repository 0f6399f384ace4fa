//! A streaming decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1). Strict where
//! leniency breaks framing: sizes are hex digits only (at most 16), every line ends in CRLF,
//! chunk data is followed by CRLF exactly. Extensions and trailers are skipped, within bounds.

use super::chars::TCHAR;
use super::error::ErrorKind;

/// Chunk sizes have at most this many hex digits (a u64).
const SIZE_DIGITS_MAX: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the size: only `;` may follow (BWS belongs to an extension).
    SizeBws,
    /// After `;`: optional whitespace, then an extension name.
    ExtStart,
    ExtName,
    /// Whitespace after a name: `=` or `;` must follow.
    ExtNameBws,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtValueToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// After a closing quote: `;`, CR, or whitespace before a `;`.
    ExtAfterQuoted,
    /// Whitespace after a value: only `;` may follow.
    ExtValueBws,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line: a field name, or CR for the end of the body.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

impl State {
    /// States inside a chunk extension, whose bytes count against `chunk_extension_size_max`.
    fn in_extension(self) -> bool {
        matches!(
            self,
            State::SizeBws
                | State::ExtStart
                | State::ExtName
                | State::ExtNameBws
                | State::ExtValueStart
                | State::ExtValueToken
                | State::ExtQuoted
                | State::ExtQuotedEscape
                | State::ExtAfterQuoted
                | State::ExtValueBws
        )
    }
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
        let old = self.state;
        if old.in_extension() && byte != b'\r' {
            self.extension_bytes += 1;
            if self.extension_bytes > self.extension_bytes_max {
                return Err(ErrorKind::BadChunk);
            }
        }
        if matches!(old, State::TrailerStart | State::TrailerName | State::TrailerValue)
            && byte != b'\r'
        {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.trailer_bytes_max {
                return Err(ErrorKind::HeadersTooLarge);
            }
        }
        self.state = self.next(byte).ok_or(ErrorKind::BadChunk)?;
        if old == State::SizeLf {
            self.remaining = self.size;
            self.extension_bytes = 0;
            (self.size, self.size_digits) = (0, 0);
            if self.remaining == 0 {
                self.state = State::TrailerStart;
            }
        }
        Ok(())
    }

    /// The state after `byte`, or `None` when `byte` breaks the grammar (RFC 9112 §7.1:
    /// `chunk-size [ chunk-ext ] CRLF`, `chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )`,
    /// trailer lines are `field-name ":" field-value CRLF`).
    fn next(&mut self, byte: u8) -> Option<State> {
        use State::*;
        let ws = matches!(byte, b' ' | b'\t');
        let tchar = TCHAR[usize::from(byte)];
        Some(match (self.state, byte) {
            (Size, _) if byte.is_ascii_hexdigit() => {
                if self.size_digits == SIZE_DIGITS_MAX {
                    return None;
                }
                let digit = (byte as char).to_digit(16).expect("matched a hex digit");
                self.size = self.size << 4 | u64::from(digit);
                self.size_digits += 1;
                Size
            }
            (Size, b';') if self.size_digits > 0 => ExtStart,
            (Size, _) if ws && self.size_digits > 0 => SizeBws,
            (Size, b'\r') if self.size_digits > 0 => SizeLf,
            (SizeBws, _) if ws => SizeBws,
            (SizeBws, b';') => ExtStart,
            (ExtStart, _) if ws => ExtStart,
            (ExtStart, _) if tchar => ExtName,
            (ExtName, _) if tchar => ExtName,
            (ExtName, _) if ws => ExtNameBws,
            (ExtName | ExtNameBws, b'=') => ExtValueStart,
            (ExtName | ExtNameBws, b';') => ExtStart,
            (ExtNameBws, _) if ws => ExtNameBws,
            (ExtValueStart, _) if ws => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart, _) if tchar => ExtValueToken,
            (ExtValueToken, _) if tchar => ExtValueToken,
            (ExtValueToken | ExtAfterQuoted, _) if ws => ExtValueBws,
            (ExtValueToken | ExtAfterQuoted | ExtValueBws, b';') => ExtStart,
            (ExtValueBws, _) if ws => ExtValueBws,
            (ExtQuoted, b'"') => ExtAfterQuoted,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if ws || (byte >= 0x21 && byte != 0x7f) => ExtQuoted,
            (ExtQuotedEscape, _) if ws || (byte >= 0x21 && byte != 0x7f) => ExtQuoted,
            (ExtName | ExtValueToken | ExtAfterQuoted, b'\r') => SizeLf,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if tchar => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if ws || (byte >= 0x21 && byte != 0x7f) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (Data | Done, _) => unreachable!("handled by decode"),
            _ => return None,
        })
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
            b"2 xyz\r\n",
            b"2;\r\n",
            b"2 \r\n",
            b"2;a=\r\n",
            b"2;a b\r\n",
            b"2;a=\"x\r\n",
            b"1\r\na\r\n0\r\n\n",
            b"1\r\na\r\n0\r\nx\r\n",
            b"1\r\na\r\n0\r\nx: y\n",
        ] {
            let mut decoder = ChunkedDecoder::new(4096, 8192);
            assert!(decoder.decode(bad, &mut [0; 64]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extensions_follow_the_grammar() {
        for good in [
            &b"1;a\r\nx\r\n0\r\n\r\n"[..],
            b"1 ; a = b ; c\r\nx\r\n0\r\n\r\n",
            b"1;a=\"q \\\" ;\"\r\nx\r\n0;z\r\nt: v\r\n\r\n",
        ] {
            assert_eq!(decode_all(good, 8).unwrap(), b"x", "{good:?}");
        }
    }

    #[test]
    fn body_larger_than_room_is_too_large() {
        assert_eq!(decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 9), Err(ErrorKind::BodyTooLarge));
        assert!(decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 10).is_ok());
    }
}
