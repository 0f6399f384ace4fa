"""Bounded load for the no-allocation check: N keep-alive requests to a loopback server, mixing
successes, overruns, panics and stack overflows. Exits non-zero on an unexpected status."""
import http.client
import sys

host, port = sys.argv[1].split(":")
count = int(sys.argv[2])
app = sys.argv[3] if len(sys.argv) > 3 else "demo"
cases = [("GET", "/", 200), ("GET", "/alloc/16", 200), ("GET", "/alloc/100000", 500),
         ("POST", "/echo", 200), ("GET", "/nope", 404)]
if app == "demo":  # endpoints only the built-in demo app has
    cases += [("GET", "/panic", 500), ("GET", "/overflow", 500), ("GET", "/sleep/1", 200)]
if app == "plugin":  # the C plugin's endpoints that use libc's lazy state (tzset, NSS, stdio)
    cases += [("GET", "/libc/time", 200), ("GET", "/libc/resolve", 200),
              ("GET", "/libc/printf?fill=4096", 200)]
connection = http.client.HTTPConnection(host, int(port), timeout=10)
for i in range(count):
    method, path, expected = cases[i % len(cases)]
    body = b"x" * 100 if method == "POST" else None
    connection.request(method, path, body=body)
    response = connection.getresponse()
    response.read()
    if response.status != expected:
        sys.exit(f"{method} {path}: expected {expected}, got {response.status}")
print(f"load: {count} requests answered as expected")
