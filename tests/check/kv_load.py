"""Bounded load on the `kv` example for the no-allocation check: CLIENTS concurrent keep-alive
clients, about N requests in all, each client writing its own keys (PUT, GET, DELETE on
/kv/{key}) with overruns interleaved (`GET /kv/{key}?pad=1024`: 1 MiB in the request's arena
while holding the store's lock, a 500). Then every key is read back: each one's last PUT value,
or 404 after its DELETE. /stats before and after: one recovered poison per overrun, the live keys
counted, no state heap failure. Exits non-zero on any difference.
Usage: kv_load.py HOST:PORT N [CLIENTS]"""
import http.client
import os
import sys
import threading

host, port = sys.argv[1].split(":")
count = int(sys.argv[2])
clients = int(sys.argv[3]) if len(sys.argv) > 3 else 4
KEYS_PER_CLIENT = 16
# Keys named after this run, so that a second run against the same server checks its own writes.
RUN = f"r{os.getpid()}"


def connect():
    return http.client.HTTPConnection(host, int(port), timeout=10)


def request(connection, method, path, body=None):
    connection.request(method, path, body=body)
    response = connection.getresponse()
    return response.status, response.read()


def expect(got, status, body=None, what=""):
    # An exception, not sys.exit: a client thread's failure is printed, and its tally stays None.
    if got[0] != status or (body is not None and got[1] != body):
        raise AssertionError(f"{what}: expected {status} {body!r:.60}, got {got[0]} {got[1]!r:.60}")


def value(key, version):
    """Bytes that name their key and write, 64 to 763 bytes long (several size classes)."""
    head = f"{key} version {version} ".encode()
    return head + bytes([97 + version % 26]) * (64 + (hash(key) % 700) - len(head))


def stats():
    text = request(connect(), "GET", "/stats")[1].decode()
    return {name: int(n) for name, n in (line.split() for line in text.splitlines())}


def client(index, budget, expected, tally):
    connection = connect()
    keys = [f"{RUN}c{index}k{k}" for k in range(KEYS_PER_CLIENT)]
    done = puts = gets = deletes = overruns = step = 0
    while done < budget:
        key = keys[step % len(keys)]
        path = f"/kv/{key}"
        expected[key] = value(key, step)
        expect(request(connection, "PUT", path, expected[key]), 204, what=f"PUT {path}")
        puts += 1
        if step % 4 == 0:  # 1 MiB in a 256 KiB arena, with the lock held
            expect(request(connection, "GET", f"{path}?pad=1024"), 500, what=f"GET {path}?pad")
            overruns += 1
        expect(request(connection, "GET", path), 200, expected[key], f"GET {path}")
        gets += 1
        if step % 7 == 3:
            expect(request(connection, "DELETE", path), 204, what=f"DELETE {path}")
            expect(request(connection, "GET", path), 404, what=f"GET {path} after DELETE")
            expected[key] = None
            deletes += 1
            gets += 1
        done = puts + gets + deletes + overruns
        step += 1
    tally[index] = (puts, gets, deletes, overruns)


before = stats()
expected, tally = {}, [None] * clients
threads = [threading.Thread(target=client, args=(i, count // clients, expected, tally))
           for i in range(clients)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if None in tally:
    sys.exit("a client failed (above)")
puts, gets, deletes, overruns = (sum(column) for column in zip(*tally))

# Every write kept: each key's last PUT value, or 404 after its last DELETE.
connection = connect()
for key, last in sorted(expected.items()):
    if last is None:
        expect(request(connection, "GET", f"/kv/{key}"), 404, what=f"final GET {key}")
    else:
        expect(request(connection, "GET", f"/kv/{key}"), 200, last, f"final GET {key}")
live = sum(last is not None for last in expected.values())
after = stats()
for name, want in (("recovered_poisons", overruns), ("keys", live), ("state_heap_failures", 0)):
    if after[name] - before[name] != want:
        sys.exit(f"/stats {name}: went from {before[name]} to {after[name]}, expected +{want}")
print(f"kv load: {puts + gets + deletes + overruns} requests by {clients} clients ({puts} PUT, "
      f"{gets} GET, {deletes} DELETE, {overruns} overruns = 500, each poison recovered); "
      f"{len(expected)} keys read back: {live} with their last PUT value, "
      f"{len(expected) - live} deleted (404)")
