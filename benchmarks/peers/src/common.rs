//! Work shared by every benchmark server (cella's bench app includes this file too), so that
//! every server answers with the same bytes for the same request.

/// `GET /`.
pub const HELLO: &str = "Hello, World!";

/// `GET /alloc/{kib}`: allocates and touches `kib` KiB, answers the length.
pub fn alloc(kib: usize) -> String {
    let buffer = vec![1u8; kib * 1024];
    std::hint::black_box(&buffer).len().to_string()
}

/// `GET /json`: builds and serialises a JSON object of about 1 KiB by hand (no serde in any
/// server, so the work is the same everywhere).
pub fn json() -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(1200);
    out.push_str("{\"service\":\"bench\",\"items\":[");
    for i in 0..16u32 {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"id\":{i},\"name\":\"item-{i:04}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b\"]}}",
            i * 7 + 3,
            (i * 13) % 100
        );
    }
    out.push_str("],\"ok\":true}");
    out
}

/// The number after `prefix` in `path`, as in `/alloc/10`.
#[allow(dead_code)]
pub fn number_after(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}
