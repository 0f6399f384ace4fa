#!/usr/bin/env python3
"""Differential test: cella (over a real socket) against h11 (in process) on one corpus.

Each case's bytes are sent on a fresh connection to a running cella server, followed by a
half-close, and every response is read until the server closes. The same bytes go to an h11
server-side connection. h11's verdict is a list of requests (then: the end, an error, or an
incomplete message); each request it accepted is turned into the response cella's test app would
give it (the route table below), so both sides become comparable lists of responses:

    accepted request -> "STATUS:BODY"        (BODY as a repr; long bodies by length and hash)
    rejection        -> "reject STATUS" (cella) / "reject" (h11: its status hint is noted only)

A case agrees when both lists agree (rejection statuses aside). A disagreement fails the run
unless allowlist.toml lists the case with exactly the two summaries observed and a reason; an
allow-list entry whose case now agrees (or disagrees differently) also fails, so the list and
docs/differential.md stay true. Separately, every case says what RFC 9112 lets a server do
("accept", "reject" or "either"); cella contradicting it fails too, unless allow-listed.

Usage: differential.py --addr 127.0.0.1:PORT [--corpus FILE] [--allow FILE] [--fuzz DIR]
                       [--report FILE] [--strict-close] [--verbose]
Exit status: 0 all agree or allow-listed; 1 an unexplained disagreement or a stale allow-list
entry; 2 a usage error, or h11 missing or not the pinned version.
"""

import argparse
import hashlib
import os
import re
import socket
import sys
import time
import tomllib

try:
    import h11
except ImportError:
    print("differential.py: the python package h11 is missing "
          "(tests/run.sh installs it: python3 -m pip install h11==0.16.0)", file=sys.stderr)
    sys.exit(2)

# The allow-list records h11's verdicts as this version gives them; tests/run.sh installs it.
H11_VERSION = "0.16.0"
if h11.__version__ != H11_VERSION:
    print(f"differential.py: h11 {h11.__version__} is installed; the allow-list was written "
          f"against h11 {H11_VERSION} (python3 -m pip install h11=={H11_VERSION})",
          file=sys.stderr)
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Statuses cella's parser answers with (runtime/src/http/error.rs), always closing after them.
# None of the routes the corpus reaches can produce one of these.
REJECT_STATUSES = {400, 408, 413, 414, 417, 431, 501, 505}
STEP_TIMEOUT_S = 10.0
IDLE_AFTER_ANSWER_S = 1.0
BODY_SHOWN_MAX = 48

# ---------------------------------------------------------------- corpus


def decode_bytes(text):
    r"""Our escapes: \r \n \t \0 \\ \xHH, and \{N:TEXT} (TEXT, itself escaped, N times)."""
    out = bytearray()
    i = 0
    simple = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", '"': b'"'}
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("latin-1")
            i += 1
            continue
        kind = text[i + 1]
        if kind in simple:
            out += simple[kind]
            i += 2
        elif kind == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif kind == "{":
            end = text.index("}", i)
            count, _, inner = text[i + 2:end].partition(":")
            out += decode_bytes(inner) * int(count)
            i = end + 1
        else:
            raise ValueError(f"unknown escape \\{kind} in {text!r}")
    return bytes(out)


def load_corpus(path):
    with open(path, "rb") as f:
        cases = tomllib.load(f)["case"]
    seen = set()
    for case in cases:
        assert case["id"] not in seen, f"duplicate case id {case['id']}"
        assert case["rfc"] in ("accept", "reject", "either"), case["id"]
        seen.add(case["id"])
        case["data"] = decode_bytes(case["bytes"])
    return cases


# Seeds of the fuzz targets (fuzz/src/head.rs, fuzz/src/chunked.rs): a head seed is the bytes
# a client sent; a chunked seed is four bytes of decoder settings, then a chunked body, sent
# here after a head that announces it. A seed that would reach a test endpoint with side
# effects (sleeping, spinning, crashing the process on purpose) is skipped: the server must stay
# up for the other cases.
CHUNKED_PREFIX = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_SETTINGS_BYTES = 4
UNSAFE_PATH = re.compile(rb"/(null-write|panic-exhausts-reserve|panic-when-full|sleep|spin|"
                         rb"upstream|socket-then-overrun|drop|status)", re.IGNORECASE)


def load_fuzz_seeds(directory):
    cases, skipped = [], []
    for target, prefix, settings in (("head", b"", 0),
                                     ("chunked", CHUNKED_PREFIX, CHUNKED_SETTINGS_BYTES)):
        folder = os.path.join(directory, target)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = prefix + f.read()[settings:]
            case_id = f"fuzz-{target}/{name}"
            if UNSAFE_PATH.search(data):
                skipped.append(case_id)
                continue
            cases.append({"id": case_id, "source": f"fuzz/corpus/{target}", "rfc": "either",
                          "data": data})
    return cases, skipped


# ---------------------------------------------------------------- the app's answers


def show_body(body):
    body = bytes(body)
    if len(body) <= BODY_SHOWN_MAX:
        return repr(body)
    return f"<{len(body)} bytes sha1:{hashlib.sha1(body).hexdigest()[:12]}>"


def target_path(target):
    """The path of a target as RFC 9112 §3.2 defines it; None when it has none."""
    target = bytes(target)
    if target.startswith(b"/"):
        return target.split(b"?", 1)[0].split(b"#", 1)[0]
    if target == b"*":
        return b"*"
    match = re.match(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", target)
    if match:
        rest = target[match.end():]
        path = rest.split(b"?", 1)[0].split(b"#", 1)[0]
        return path or b"/"
    return None


# The routes of runtime/examples/testapp.rs (the demo app plus test endpoints). The corpus may
# only reach SAFE ones; the others are listed so that a wrong method still predicts 405.
ROUTES = [
    (b"GET", b"/", "hello"), (b"GET", b"/alloc/{}", None), (b"POST", b"/echo", "echo"),
    (b"GET", b"/panic", None), (b"GET", b"/overflow", None), (b"GET", b"/sleep/{}", None),
    (b"GET", b"/spin/{}", None), (b"GET", b"/upstream", None), (b"GET", b"/status/{}", None),
    (b"GET", b"/header/{}", "header"), (b"GET", b"/drops", None),
    (b"GET", b"/drop-then-overrun", None), (b"GET", b"/drop-then-panic", None),
    (b"GET", b"/socket-then-overrun", None), (b"GET", b"/null-write", None),
    (b"GET", b"/panic-when-full", None), (b"GET", b"/panic-exhausts-reserve", None),
]


def match_route(pattern, path):
    """runtime/src/router.rs `match_path`: leading slashes dropped, one segment per part."""
    segments = [s for s in pattern.split(b"/") if s]
    rest = path.lstrip(b"/")
    params = []
    for segment in segments:
        part, _, tail = rest.partition(b"/")
        if segment == b"{}":
            if not part:
                return None
            params.append(part)
        elif segment != part:
            return None
        rest = tail
    return params if not rest else None


class UnsafeCase(Exception):
    pass


def predict(method, target, headers, body):
    """(status, body) the test app answers to a request h11 accepted."""
    path = target_path(target)
    if path is None:
        path = bytes(target)  # not a form cella routes; the router would see no match
    allowed = False
    for route_method, pattern, kind in ROUTES:
        params = match_route(pattern, path)
        if params is None:
            continue
        if route_method != method and not (method == b"HEAD" and route_method == b"GET"):
            allowed = True
            continue
        if kind == "hello":
            return 200, b"Hello, World!"
        if kind == "echo":
            return 200, bytes(body)
        if kind == "header":
            wanted = params[0].lower()
            values = [v for n, v in headers if n.lower() == wanted]
            return 200, bytes(values[0]) if values else b"(none)"
        raise UnsafeCase(f"{method!r} {target!r} reaches a route with side effects")
    if allowed:
        return 405, b"method not allowed\n"
    return 404, b"not found\n"


# ---------------------------------------------------------------- h11's verdict


def run_h11(data):
    """h11's verdict on `data`: (items, end, detail). items: (status, body) per request."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 30)
    conn.receive_data(data)
    items = []
    request, body = None, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as error:
            return items, "reject", f"{error} (status hint {error.error_status_hint})"
        if event is h11.NEED_DATA:
            started = request is not None or conn.trailing_data[0]
            return items, "incomplete" if started else "end", ""
        if event is h11.PAUSED:
            return items, "paused", "h11 paused (protocol switch)"
        if isinstance(event, h11.Request):
            request, body = event, bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            status, answer = predict(request.method, request.target, request.headers, body)
            items.append((status, answer))
            conn.send(h11.Response(status_code=status,
                                   headers=[("content-length", str(len(answer)))]))
            conn.send(h11.Data(data=answer))
            conn.send(h11.EndOfMessage())
            request = None
            if conn.our_state is h11.MUST_CLOSE:
                return items, "closed", ""
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return items, "end", ""


# ---------------------------------------------------------------- cella's verdict


def exchange(addr, data):
    """Sends `data`, half-closes, and reads until the server closes.

    Returns (bytes read, whether the server kept the connection open after answering).
    The second is a cella runtime defect seen about once in thirty connections (the FIN that
    arrives while a handler runs is never read; the connection idles until
    keepalive_idle_timeout): when everything read so far is complete responses and nothing
    more comes for IDLE_AFTER_ANSWER_S, the exchange ends there and the caller counts it.
    """
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=STEP_TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: read its answer
        sock.settimeout(IDLE_AFTER_ANSWER_S)
        received = bytearray()
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(received), False
            except socket.timeout:
                if received and responses_complete(bytes(received)):
                    return bytes(received), True
                if time.monotonic() >= deadline:
                    raise RuntimeError("cella neither answered nor closed within "
                                       f"{STEP_TIMEOUT_S} s; read {bytes(received[:200])!r}")
                continue
            if not chunk:
                return bytes(received), False
            received += chunk


def responses_complete(raw):
    try:
        parse_responses(raw)
        return True
    except ValueError:
        return False


def parse_responses(raw):
    """cella's responses: (status, body) each, interim 1xx skipped. Raises on bad framing."""
    responses = []
    while raw:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError(f"unframed bytes after the responses: {raw[:200]!r}")
        lines = raw[:end].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        start = end + 4
        if status < 200:
            raw = raw[start:]
            continue
        if len(raw) < start + length:
            raise ValueError(f"response body cut short: {raw[:200]!r}")
        responses.append((status, raw[start:start + length]))
        raw = raw[start + length:]
    return responses


# ---------------------------------------------------------------- comparison


def summarise_cella(responses):
    parts = []
    for status, body in responses:
        parts.append(f"reject {status}" if status in REJECT_STATUSES else
                     f"{status}:{show_body(body)}")
    return " | ".join(parts) or "(no response)"


def summarise_h11(items, end):
    parts = [f"{status}:{show_body(body)}" for status, body in items]
    if end == "reject":
        parts.append("reject")
    elif end == "incomplete":
        parts.append("(incomplete: no response)")
    elif end == "paused":
        parts.append("(paused)")
    return " | ".join(parts) or "(no response)"


def agree(responses, items, end):
    """Whether cella's responses are what h11's verdict predicts."""
    accepted = [(s, bytes(b)) for s, b in responses if s not in REJECT_STATUSES]
    rejected = [s for s, _ in responses if s in REJECT_STATUSES]
    if end == "reject":
        return accepted == items and len(rejected) == 1
    return end != "paused" and responses == items


def cella_verdict(responses):
    """accept, reject, or silent (closed without answering: an incomplete request)."""
    if any(s in REJECT_STATUSES for s, _ in responses):
        return "reject"
    return "accept" if responses else "silent"


def check_invariants(responses):
    """What must hold whatever h11 says: a rejection is the last response."""
    for index, (status, _) in enumerate(responses):
        if status in REJECT_STATUSES and index != len(responses) - 1:
            return f"a response follows the rejection {status}"
    return None


def printable(data, limit=160):
    shown = repr(bytes(data[:limit]))
    return shown + (f" ... ({len(data)} bytes)" if len(data) > limit else "")


ALLOW_KINDS = {
    "h11-lenient": "h11 accepts what cella rejects, and RFC 9112 allows (or requires) rejecting it",
    "h11-strict": "h11 rejects what RFC 9112 allows, and cella accepts it",
    "h11-semantics": "not parsing: h11 handles the connection differently",
    "cella-choice": "both readings are allowed; cella's is the stricter, on purpose",
    "limit": "a configured limit of cella's (h11 given the whole input at once has none)",
    "cella-bug": "cella deviates from RFC 9112; reported, not yet fixed",
}


def load_allow(path):
    with open(path, "rb") as f:
        entries = tomllib.load(f).get("allow", [])
    allow = {}
    for entry in entries:
        assert entry["id"] not in allow, f"{entry['id']} is allow-listed twice"
        assert entry.get("kind") in ALLOW_KINDS, f"{entry['id']}: kind must be one of " \
            f"{sorted(ALLOW_KINDS)}"
        assert entry.get("reason"), f"{entry['id']}: an allow-listed case needs a reason"
        allow[entry["id"]] = entry
    return allow


def judge(case, responses, items, end):
    """What is wrong with cella's answer to `case`, given h11's verdict (empty: nothing)."""
    problems = []
    invariant = check_invariants(responses)
    if invariant:
        problems.append(invariant)
    if not agree(responses, items, end):
        problems.append("cella and h11 disagree")
    verdict = cella_verdict(responses)
    if case["rfc"] == "accept" and verdict != "accept":
        answer = "rejects" if verdict == "reject" else "closes without an answer"
        problems.append(f"cella {answer} where RFC 9112 says accept")
    if case["rfc"] == "reject" and verdict == "accept":
        problems.append("cella accepts where RFC 9112 says reject")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addr", required=True, help="HOST:PORT of a running cella testapp")
    parser.add_argument("--corpus", default=os.path.join(HERE, "corpus.toml"))
    parser.add_argument("--allow", default=os.path.join(HERE, "allowlist.toml"))
    parser.add_argument("--fuzz", default=os.path.join(REPO, "fuzz", "corpus"),
                        help="fuzz seed folder (head/ and chunked/), used when present")
    parser.add_argument("--report", help="write every case's verdicts here (markdown)")
    parser.add_argument("--strict-close", action="store_true",
                        help="fail when cella keeps a half-closed connection open")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    cases = load_corpus(args.corpus)
    fuzz_cases, fuzz_skipped = load_fuzz_seeds(args.fuzz)
    allow = load_allow(args.allow)
    allow_name = os.path.basename(args.allow)

    failures, rows, kept_open = [], [], []
    counts = {"agree": 0, "allowed": 0, "failed": 0}
    used_allow = set()
    for case in cases + fuzz_cases:
        case_id, data = case["id"], case["data"]
        try:
            items, end, detail = run_h11(data)
        except UnsafeCase as error:
            failures.append(f"{case_id}: {error}; the corpus must not reach it")
            counts["failed"] += 1
            continue
        try:
            raw, lingered = exchange(args.addr, data)
            responses = parse_responses(raw)
        except (OSError, RuntimeError, ValueError) as error:
            failures.append(f"{case_id}: talking to cella failed: {error}")
            counts["failed"] += 1
            continue
        if lingered:
            kept_open.append(case_id)
        cella_summary, h11_summary = summarise_cella(responses), summarise_h11(items, end)
        problems = judge(case, responses, items, end)
        entry = allow.get(case_id)
        status = "agree"
        if entry is not None:
            used_allow.add(case_id)
            if not problems:
                failures.append(f"{case_id}: allow-listed but now agrees: remove it from "
                                f"{allow_name} and docs/differential.md")
                status = "failed"
            elif (entry["cella"], entry["h11"]) != (cella_summary, h11_summary):
                failures.append(f"{case_id}: allow-listed as\n    cella: {entry['cella']}\n"
                                f"    h11:   {entry['h11']}\n  but now\n"
                                f"    cella: {cella_summary}\n    h11:   {h11_summary}")
                status = "failed"
            else:
                status = "allowed"
        elif problems:
            failures.append(f"{case_id}: {'; '.join(problems)}\n    bytes: {printable(data)}\n"
                            f"    cella: {cella_summary}\n    h11:   {h11_summary} {detail}")
            status = "failed"
        counts[status] += 1
        rows.append((case_id, case["rfc"], status, entry["kind"] if entry else "",
                     cella_summary, h11_summary, detail, data))
        if args.verbose:
            print(f"{status:8} {case_id}: cella {cella_summary} / h11 {h11_summary}")
    fuzz_present = any(os.path.isdir(os.path.join(args.fuzz, t)) for t in ("head", "chunked"))
    for stale in sorted(set(allow) - used_allow):
        if stale.startswith("fuzz-") and not fuzz_present:
            continue  # the fuzz corpus is optional: its entries wait for it
        failures.append(f"{stale}: allow-listed but no such case ran")

    total = len(cases) + len(fuzz_cases)
    print(f"differential: {total} cases ({len(cases)} corpus, {len(fuzz_cases)} fuzz seeds; "
          f"{len(fuzz_skipped)} seeds skipped as unsafe to send): {counts['agree']} agree, "
          f"{counts['allowed']} allow-listed disagreements, {counts['failed']} failed")
    by_kind = {}
    for case_id in used_allow:
        by_kind.setdefault(allow[case_id]["kind"], []).append(case_id)
    for kind in ALLOW_KINDS:
        if kind in by_kind:
            print(f"  allow-listed {kind}: {len(by_kind[kind])}")
    for case_id in sorted(by_kind.get("cella-bug", [])):
        print(f"WARN known cella bug, allow-listed: {case_id}: {allow[case_id]['reason']}")
    if kept_open:
        print(f"WARN cella kept {len(kept_open)} half-closed connection(s) open after its last "
              f"response (runtime defect, docs/differential.md): {', '.join(kept_open)}")
        if args.strict_close:
            failures.append("half-closed connections kept open (--strict-close)")
    if args.report:
        write_report(args.report, rows, counts, total)
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


def write_report(path, rows, counts, total):
    with open(path, "w") as f:
        f.write(f"# differential report: {total} cases, {counts['agree']} agree, "
                f"{counts['allowed']} allow-listed, {counts['failed']} failed\n\n")
        f.write("| case | RFC | result | cella | h11 | h11 detail | bytes |\n")
        f.write("| --- | --- | --- | --- | --- | --- | --- |\n")
        for case_id, rfc, status, kind, cella, h11_summary, detail, data in rows:
            cells = [case_id, rfc, f"{status} {kind}".strip(), cella, h11_summary, detail,
                     printable(data, 80)]
            f.write("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")


if __name__ == "__main__":
    sys.exit(main())
