//! A reference decoder for `Transfer-Encoding: chunked`, written from RFC 9112 §7.1 and
//! nothing else, to be compared with `cella::http::chunked::ChunkedDecoder`. It favours being
//! obviously right over being fast: one pass over the whole input, one byte at a time, each
//! grammar rule a state.
//!
//! ```text
//! chunked-body    = *chunk last-chunk trailer-section CRLF
//! chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size      = 1*HEXDIG                          ; at most 16 digits here (a u64)
//! last-chunk      = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext       = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! chunk-ext-name  = token
//! chunk-ext-val   = token / quoted-string
//! trailer-section = *( field-line CRLF )
//! field-line      = field-name ":" OWS field-value OWS   ; field-name = token
//! field-value     = *( SP / HTAB / VCHAR / obs-text )    ; no CR, LF, NUL or other CTL
//! ```
//!
//! Bare CR and bare LF are rejected everywhere; so is obs-fold (a trailer line that starts
//! with SP or HTAB: its first byte must start a token).
//!
//! Every error is reported at the first byte after which no valid body can follow, so a
//! prefix of a valid body is always [`Outcome::Incomplete`], never [`Outcome::Rejected`].
//!
//! Limits, the same as the runtime's (docs/configuration.md):
//! - `extension_bytes_max` (`chunk_extension_size_max`): the bytes of one chunk's extensions
//!   "after the `;`". Precisely: every byte between the size's last digit and its CR except
//!   the first of them (which is the `;`, or the BWS before it). This equals "after the `;`"
//!   when there is no BWS before the `;`, and it also bounds that BWS.
//! - `trailer_bytes_max` (`trailer_size_max`): the bytes of all trailer lines without their
//!   CRLFs.
//! - `data_bytes_max`: the room for decoded data (`request_body_size_max`); one data byte
//!   past it is an error.

/// The limits a body is decoded under.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub extension_bytes_max: usize,
    pub trailer_bytes_max: usize,
    pub data_bytes_max: usize,
}

/// What a whole input is, as the start of a chunked body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete body of `body_bytes` bytes (what follows is the next request) decoding to
    /// `data`.
    Complete { body_bytes: usize, data: Vec<u8> },
    /// A valid prefix of a body; `data` is what it has decoded so far.
    Incomplete { data: Vec<u8> },
    /// No body starts with these bytes (or a limit is exceeded).
    Rejected,
}

/// Chunk sizes have at most this many hex digits.
pub const SIZE_DIGITS_MAX: usize = 16;

/// Where the decoder is in the grammar: each state names what the next byte may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In `chunk-size`; `digits` read so far.
    Size,
    /// After the size or after a complete extension: BWS, `;` or CR.
    AfterExtension,
    /// BWS that must be followed by `;` (not by CR).
    WhitespaceBeforeSemicolon,
    /// After `;` (and BWS): the first byte of an extension name.
    ExtensionNameStart,
    /// In an extension name: more tchar, BWS, `=`, `;` or CR.
    ExtensionName,
    /// BWS after a name: `=` or `;` must follow.
    WhitespaceAfterName,
    /// After `=` (and BWS): a token or a quoted string starts.
    ExtensionValueStart,
    ExtensionValueToken,
    QuotedString,
    QuotedPair,
    /// After the CR of a chunk-size line.
    SizeLf,
    /// In chunk data; `remaining` bytes to go.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final CRLF.
    TrailerLineStart,
    TrailerName,
    /// After `:`: OWS and the field value, up to CR.
    TrailerValue,
    TrailerLf,
    FinalLf,
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_whitespace(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`
fn is_qdtext(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// `quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )`
fn is_quotable(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

/// `field-value` bytes: SP, HTAB, VCHAR, obs-text.
fn is_field_value_byte(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

/// Decodes `input` as the start of a chunked body.
pub fn decode(input: &[u8], limits: Limits) -> Outcome {
    let mut decoder = Reference::new(limits);
    for (index, &byte) in input.iter().enumerate() {
        if decoder.step(byte).is_err() {
            return Outcome::Rejected;
        }
        if decoder.done {
            return Outcome::Complete { body_bytes: index + 1, data: decoder.data };
        }
    }
    Outcome::Incomplete { data: decoder.data }
}

struct Reference {
    limits: Limits,
    state: State,
    size: u64,
    size_digits: usize,
    /// Bytes of this chunk's extension section so far (between the size and its CR).
    extension_section_bytes: usize,
    remaining: u64,
    trailer_bytes: usize,
    data: Vec<u8>,
    done: bool,
}

/// The input is not a chunked body.
struct Reject;

impl Reference {
    fn new(limits: Limits) -> Self {
        Reference {
            limits,
            state: State::Size,
            size: 0,
            size_digits: 0,
            extension_section_bytes: 0,
            remaining: 0,
            trailer_bytes: 0,
            data: Vec::new(),
            done: false,
        }
    }

    fn step(&mut self, byte: u8) -> Result<(), Reject> {
        self.count_limits(byte)?;
        self.state = match self.state {
            State::Size => self.size_byte(byte)?,
            State::Data => self.data_byte(byte)?,
            State::SizeLf => self.size_line_end(byte)?,
            State::DataCr => expect(byte, b'\r', State::DataLf)?,
            State::DataLf => expect(byte, b'\n', State::Size)?,
            State::TrailerLineStart => match byte {
                b'\r' => State::FinalLf,
                _ if is_tchar(byte) => State::TrailerName,
                _ => return Err(Reject),
            },
            State::TrailerName => match byte {
                b':' => State::TrailerValue,
                _ if is_tchar(byte) => State::TrailerName,
                _ => return Err(Reject),
            },
            State::TrailerValue => match byte {
                b'\r' => State::TrailerLf,
                _ if is_field_value_byte(byte) => State::TrailerValue,
                _ => return Err(Reject),
            },
            State::TrailerLf => expect(byte, b'\n', State::TrailerLineStart)?,
            State::FinalLf => {
                expect(byte, b'\n', State::FinalLf)?;
                self.done = true;
                State::FinalLf
            }
            extension => self.extension_byte(extension, byte)?,
        };
        Ok(())
    }

    /// Extension and trailer limits, counted before the byte is looked at: a byte past a
    /// limit is an error whatever it is, except the CR that ends the line.
    fn count_limits(&mut self, byte: u8) -> Result<(), Reject> {
        let in_extension = !matches!(
            self.state,
            State::Size
                | State::SizeLf
                | State::Data
                | State::DataCr
                | State::DataLf
                | State::TrailerLineStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::FinalLf
        );
        let after_size =
            self.state == State::Size && self.size_digits > 0 && !byte.is_ascii_hexdigit();
        if (in_extension || after_size) && byte != b'\r' {
            self.extension_section_bytes += 1;
            // The first byte of the section (`;` or BWS) is not counted.
            if self.extension_section_bytes - 1 > self.limits.extension_bytes_max {
                return Err(Reject);
            }
        }
        let in_trailer = matches!(self.state, State::TrailerName | State::TrailerValue)
            || (self.state == State::TrailerLineStart && byte != b'\r');
        if in_trailer && byte != b'\r' {
            self.trailer_bytes += 1;
            if self.trailer_bytes > self.limits.trailer_bytes_max {
                return Err(Reject);
            }
        }
        Ok(())
    }

    fn size_byte(&mut self, byte: u8) -> Result<State, Reject> {
        if let Some(digit) = (byte as char).to_digit(16) {
            if self.size_digits == SIZE_DIGITS_MAX {
                return Err(Reject);
            }
            self.size = self.size << 4 | u64::from(digit);
            self.size_digits += 1;
            return Ok(State::Size);
        }
        if self.size_digits == 0 {
            return Err(Reject);
        }
        self.extension_byte(State::AfterExtension, byte)
    }

    fn extension_byte(&mut self, state: State, byte: u8) -> Result<State, Reject> {
        use State::*;
        let ws = is_whitespace(byte);
        Ok(match (state, byte) {
            (AfterExtension | ExtensionName | ExtensionValueToken, b'\r') => SizeLf,
            (AfterExtension | WhitespaceBeforeSemicolon, _) if ws => WhitespaceBeforeSemicolon,
            (
                AfterExtension
                | WhitespaceBeforeSemicolon
                | ExtensionName
                | WhitespaceAfterName
                | ExtensionValueToken,
                b';',
            ) => ExtensionNameStart,
            (ExtensionNameStart, _) if ws => ExtensionNameStart,
            (ExtensionNameStart | ExtensionName, _) if is_tchar(byte) => ExtensionName,
            (ExtensionName | WhitespaceAfterName, _) if ws => WhitespaceAfterName,
            (ExtensionName | WhitespaceAfterName, b'=') => ExtensionValueStart,
            (ExtensionValueStart, _) if ws => ExtensionValueStart,
            (ExtensionValueStart, b'"') => QuotedString,
            (ExtensionValueStart | ExtensionValueToken, _) if is_tchar(byte) => ExtensionValueToken,
            (ExtensionValueToken, _) if ws => WhitespaceBeforeSemicolon,
            (QuotedString, b'"') => AfterExtension,
            (QuotedString, b'\\') => QuotedPair,
            (QuotedString, _) if is_qdtext(byte) => QuotedString,
            (QuotedPair, _) if is_quotable(byte) => QuotedString,
            _ => return Err(Reject),
        })
    }

    fn size_line_end(&mut self, byte: u8) -> Result<State, Reject> {
        expect(byte, b'\n', State::Data)?;
        self.remaining = self.size;
        (self.size, self.size_digits, self.extension_section_bytes) = (0, 0, 0);
        Ok(if self.remaining == 0 { State::TrailerLineStart } else { State::Data })
    }

    fn data_byte(&mut self, byte: u8) -> Result<State, Reject> {
        if self.data.len() == self.limits.data_bytes_max {
            return Err(Reject);
        }
        self.data.push(byte);
        self.remaining -= 1;
        Ok(if self.remaining == 0 { State::DataCr } else { State::Data })
    }
}

fn expect(byte: u8, wanted: u8, next: State) -> Result<State, Reject> {
    if byte == wanted {
        Ok(next)
    } else {
        Err(Reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits =
        Limits { extension_bytes_max: 32, trailer_bytes_max: 16, data_bytes_max: 64 };

    fn complete(input: &[u8]) -> Vec<u8> {
        complete_within(input, LIMITS)
    }

    fn complete_within(input: &[u8], limits: Limits) -> Vec<u8> {
        match decode(input, limits) {
            Outcome::Complete { body_bytes, data } => {
                assert_eq!(body_bytes, input.len(), "{input:?}");
                data
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn rejected(input: &[u8]) {
        assert_eq!(
            decode(input, LIMITS),
            Outcome::Rejected,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn valid_bodies_decode() {
        assert_eq!(complete(b"0\r\n\r\n"), b"");
        assert_eq!(complete(b"000\r\n\r\n"), b"");
        assert_eq!(complete(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
        assert_eq!(complete(b"2;a=b\r\nhi\r\n1 ; c ; d = \"q\\\"\"\r\n!\r\n0\r\n\r\n"), b"hi!");
        assert_eq!(complete(b"1;a=\"\"\r\nx\r\n0;last\r\nX-T: 1\r\nY:\r\n\r\n"), b"x");
        assert_eq!(complete(b"A\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
    }

    #[test]
    fn the_strict_rules_reject() {
        for bad in [
            &b"2 xyz\r\nhi\r\n0\r\n\r\n"[..],
            b"2;\r\nhi\r\n0\r\n\r\n",
            b"2 \r\nhi\r\n0\r\n\r\n",
            b"2;a \r\nhi\r\n0\r\n\r\n",
            b"2;a=\r\nhi\r\n0\r\n\r\n",
            b"2;=b\r\nhi\r\n0\r\n\r\n",
            b"2;a=\"b\r\nhi\r\n0\r\n\r\n",
            b"2\nhi\r\n0\r\n\r\n",
            b"2\r\nhi\n0\r\n\r\n",
            b"2\r\nhix\r\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\n X: a\r\n\r\n",
            b"0\r\nX : a\r\n\r\n",
            b"0\r\nnocolon\r\n\r\n",
            b"0\r\n: a\r\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"0x1\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"11111111111111111\r\n",
        ] {
            rejected(bad);
        }
    }

    #[test]
    fn sixteen_digits_are_the_limit() {
        assert_eq!(complete(b"0000000000000000\r\n\r\n"), b"");
        rejected(b"00000000000000000\r\n\r\n");
    }

    #[test]
    fn a_valid_prefix_is_incomplete() {
        let body = b"5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\n\r\n";
        for end in 0..body.len() {
            assert!(matches!(decode(&body[..end], LIMITS), Outcome::Incomplete { .. }), "{end}");
        }
        assert_eq!(decode(b"5\r\nhel", LIMITS), Outcome::Incomplete { data: b"hel".to_vec() });
    }

    #[test]
    fn what_follows_the_body_is_not_consumed() {
        assert_eq!(
            decode(b"0\r\n\r\nGET / HTTP/1.1\r\n", LIMITS),
            Outcome::Complete { body_bytes: 5, data: vec![] }
        );
    }

    #[test]
    fn extension_limit_allows_exact_limit_and_is_enforced() {
        let limits = Limits { extension_bytes_max: 8, ..LIMITS };
        let rejected = |input: &[u8]| assert_eq!(decode(input, limits), Outcome::Rejected);
        assert_eq!(complete_within(b"1;abcdefgh\r\nx\r\n0\r\n\r\n", limits), b"x");
        rejected(b"1;abcdefghi\r\n");
        // BWS before the `;` counts too, except the section's first byte.
        assert_eq!(complete_within(b"1 ;abcdefg\r\nx\r\n0\r\n\r\n", limits), b"x");
        rejected(b"1 ;abcdefgh\r\n");
        rejected(b"1          ;a\r\n");
        // Per chunk: the next chunk counts afresh.
        assert_eq!(complete_within(b"1;abcdefgh\r\nx\r\n0;abcdefgh\r\n\r\n", limits), b"x");
    }

    #[test]
    fn trailer_limit_allows_exact_limit_and_is_enforced() {
        // Counted without CRLFs: "a: 1234567890123" is 16 bytes; "a: 12345678" and "b: 12" too.
        assert_eq!(complete(b"0\r\na: 1234567890123\r\n\r\n"), b"");
        rejected(b"0\r\na: 12345678901234\r\n\r\n");
        assert_eq!(complete(b"0\r\na: 12345678\r\nb: 12\r\n\r\n"), b"");
        rejected(b"0\r\na: 12345678\r\nb: 123\r\n");
    }

    #[test]
    fn data_limit_allows_exact_limit_and_is_enforced() {
        let limits = Limits { data_bytes_max: 3, ..LIMITS };
        assert!(matches!(decode(b"3\r\nabc\r\n0\r\n\r\n", limits), Outcome::Complete { .. }));
        assert_eq!(decode(b"4\r\nabcd", limits), Outcome::Rejected);
        assert_eq!(
            decode(b"2\r\nab\r\n2\r\nc", limits),
            Outcome::Incomplete { data: b"abc".to_vec() }
        );
    }
}
