//! Request-scoped failures and the one table that maps each to its response.

/// Everything that can go wrong with one request. `Copy`, so the hot path never allocates for
/// an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The head is not valid HTTP/1.1 (bad token, bare CR, obs-fold, ...).
    MalformedHead,
    /// Not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// The request target is neither origin-form, absolute-form nor `*` for OPTIONS, or has a
    /// fragment.
    BadTarget,
    /// CONNECT with an authority-form target: a tunnel, which this server does not offer.
    ConnectNotSupported,
    /// HTTP/1.1 without exactly one Host header, HTTP/1.0 with several, a Host that is not
    /// `uri-host [":" port]`, or one that differs from an absolute-form target's authority.
    BadHost,
    /// Content-Length malformed, or several that differ.
    BadContentLength,
    /// Both Content-Length and Transfer-Encoding: the classic smuggling vector.
    ConflictingFraming,
    /// Transfer-Encoding in an HTTP/1.0 request.
    TransferEncodingInHttp10,
    /// Transfer-Encoding that is not exactly one final `chunked`.
    BadTransferEncoding,
    /// A transfer coding we do not implement (anything but `chunked`).
    UnsupportedTransferCoding,
    /// A malformed chunk size, chunk delimiter or trailer.
    BadChunk,
    /// An `Expect` other than `100-continue`.
    UnsupportedExpectation,
    /// The request line is longer than `request_line_size_max`.
    UriTooLong,
    /// The head is larger than `request_head_size_max`, or has more than `headers_count_max`
    /// fields.
    HeadersTooLarge,
    /// The body is larger than `request_body_size_max`.
    BodyTooLarge,
    /// The head did not arrive within `header_read_timeout_ms`.
    HeadTimeout,
    /// The body did not arrive within `body_read_timeout_ms`.
    BodyTimeout,
    /// Every I/O buffer pair is lent and this head has been arriving the longest (at least a
    /// second): its pair goes to a waiting connection.
    HeadTooSlowUnderPressure,
    /// The body arrived slower than `body_rate_min_bytes_per_s`.
    BodyTooSlow,
    /// `body_slots_max` slots are already held by bodies still arriving.
    BodySlotsFull,
    /// Every slot is busy.
    NoSlot,
    /// The handler ran past `handler_timeout_ms`. 504, not 503: the request ran (in part), so a
    /// load balancer that retries 503 must not run it again.
    HandlerTimeout,
    /// The handler spent its arena.
    ArenaExhausted,
    /// The handler overflowed its stack.
    StackOverflow,
    /// The handler panicked.
    HandlerPanicked,
    /// The handler's response could not be encoded (a header with CR/LF, no room in the arena),
    /// or has a 1xx status (an interim response cannot be final; upgrades need their own API).
    BadResponse,
}

/// What the client gets for an [`ErrorKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    pub message: &'static str,
    /// Whether the connection is closed after the response (its framing can no longer be
    /// trusted, or the client is too slow to keep).
    pub close: bool,
}

impl ErrorKind {
    /// The one table from error kind to response.
    pub const fn response(self) -> ErrorResponse {
        use ErrorKind::*;
        let (status, message, close) = match self {
            MalformedHead => (400, "malformed request head", true),
            UnsupportedVersion => (505, "only HTTP/1.0 and HTTP/1.1 are supported", true),
            BadTarget => (400, "bad request target", true),
            ConnectNotSupported => (501, "CONNECT is not supported", true),
            BadHost => (400, "a request needs exactly one valid Host header", true),
            BadContentLength => (400, "malformed or conflicting Content-Length", true),
            ConflictingFraming => (400, "both Content-Length and Transfer-Encoding", true),
            TransferEncodingInHttp10 => (400, "Transfer-Encoding in an HTTP/1.0 request", true),
            BadTransferEncoding => (400, "Transfer-Encoding must end in one chunked", true),
            UnsupportedTransferCoding => (501, "unsupported transfer coding", true),
            BadChunk => (400, "malformed chunked body", true),
            UnsupportedExpectation => (417, "only Expect: 100-continue is supported", true),
            UriTooLong => (414, "request line too long", true),
            HeadersTooLarge => (431, "request head too large", true),
            BodyTooLarge => (413, "request body too large", true),
            HeadTimeout => (408, "request head not received in time", true),
            BodyTimeout => (408, "request body not received in time", true),
            HeadTooSlowUnderPressure => (408, "request head arriving too slowly", true),
            BodyTooSlow => (408, "request body arriving too slowly", true),
            BodySlotsFull => (408, "too many request bodies arriving at once; retry", true),
            NoSlot => (503, "server busy, retry", false),
            HandlerTimeout => (504, "handler deadline passed", false),
            ArenaExhausted => (500, "request exceeded its memory", false),
            StackOverflow => (500, "request exceeded its stack", false),
            HandlerPanicked => (500, "handler failed", false),
            BadResponse => (500, "handler produced an invalid response", false),
        };
        ErrorResponse { status, message, close }
    }
}
