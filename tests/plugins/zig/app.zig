//! The shared plugin app, in Zig (0.15): GET / hello, POST /echo, GET /alloc/{kib} (with a Zig
//! allocator over the host's arena), GET /upstream?to=IP:PORT (an outbound call through the
//! host), GET /greeting (set by init from the config file's [plugin] section).
//!
//! Build: python3 -m ziglang build-lib -dynamic -O ReleaseFast -lc -I runtime/include \
//!        tests/plugins/zig/app.zig -femit-bin=libapp_zig.so
const std = @import("std");
const c = @cImport({
    @cInclude("cella.h");
});

const Host = [*c]const c.CellaHost;
const Req = ?*const c.CellaRequest;
const Resp = ?*c.CellaResponse;

fn str(s: []const u8) c.CellaStr {
    return .{ .ptr = s.ptr, .len = s.len };
}

fn bytes(s: c.CellaStr) []const u8 {
    if (s.len == 0) return &[_]u8{};
    return s.ptr[0..s.len];
}

var greeting_buf: [64]u8 = undefined;
var greeting: []const u8 = "no greeting";

fn respond(host: Host, response: Resp, status: u16, content_type: []const u8, body: []const u8) void {
    _ = host.*.response_set_status.?(response, status);
    _ = host.*.response_add_header.?(response, str("content-type"), str(content_type));
    _ = host.*.response_write.?(response, str(body));
}

fn text(host: Host, response: Resp, status: u16, message: []const u8) void {
    respond(host, response, status, "text/plain; charset=utf-8", message);
}

/// A std.mem.Allocator over the request's arena: a spent arena cancels the request (500).
const ArenaAllocator = struct {
    host: Host,
    request: Req,

    fn allocator(self: *ArenaAllocator) std.mem.Allocator {
        return .{ .ptr = self, .vtable = &.{ .alloc = alloc, .resize = resize, .remap = remap, .free = free } };
    }

    fn alloc(context: *anyopaque, len: usize, alignment: std.mem.Alignment, _: usize) ?[*]u8 {
        const self: *ArenaAllocator = @ptrCast(@alignCast(context));
        const block = self.host.*.arena_alloc_or_cancel.?(self.request, len, alignment.toByteUnits());
        return @ptrCast(block);
    }

    fn resize(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize, _: usize) bool {
        return false;
    }

    fn remap(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize, _: usize) ?[*]u8 {
        return null;
    }

    fn free(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize) void {}
};

fn allocKib(host: Host, request: Req, response: Resp, path: []const u8) void {
    const kib = std.fmt.parseInt(usize, path["/alloc/".len..], 10) catch return text(host, response, 400, "bad kib\n");
    var arena = ArenaAllocator{ .host = host, .request = request };
    const gpa = arena.allocator();
    const buffer = gpa.alloc(u8, kib * 1024) catch return text(host, response, 500, "out of memory\n");
    @memset(buffer, 1);
    var digits: [32]u8 = undefined;
    const length = std.fmt.bufPrint(&digits, "{d}", .{buffer.len}) catch unreachable;
    text(host, response, 200, length);
}

fn upstream(host: Host, request: Req, response: Resp) void {
    const query = bytes(host.*.request_query.?(request));
    if (!std.mem.startsWith(u8, query, "to=")) return text(host, response, 400, "expected ?to=IP:PORT\n");
    var socket: u32 = 0;
    if (host.*.tcp_connect.?(request, str(query[3..]), 5000, &socket) != c.CELLA_STATUS_OK)
        return text(host, response, 502, "connect failed\n");
    const get = "GET / HTTP/1.1\r\nhost: upstream\r\nconnection: close\r\n\r\n";
    if (host.*.tcp_write.?(request, socket, str(get), 5000) != c.CELLA_STATUS_OK)
        return text(host, response, 502, "write failed\n");
    var arena = ArenaAllocator{ .host = host, .request = request };
    const received = arena.allocator().alloc(u8, 64 * 1024) catch return text(host, response, 500, "out of memory\n");
    var used: usize = 0;
    while (used < received.len) {
        var n: usize = 0;
        if (host.*.tcp_read.?(request, socket, received.ptr + used, received.len - used, 5000, &n) != c.CELLA_STATUS_OK)
            return text(host, response, 502, "read failed\n");
        if (n == 0) break;
        used += n;
    }
    _ = host.*.tcp_close.?(request, socket);
    const answer = received[0..used];
    const head_end = std.mem.indexOf(u8, answer, "\r\n\r\n") orelse return text(host, response, 502, "bad upstream response\n");
    if (answer.len < 12) return text(host, response, 502, "bad upstream response\n");
    const status = std.fmt.parseInt(u16, answer[9..12], 10) catch return text(host, response, 502, "bad status\n");
    respond(host, response, status, "application/octet-stream", answer[head_end + 4 ..]);
}

fn handle(host: Host, request: Req, response: Resp) callconv(.c) void {
    const method = bytes(host.*.request_method.?(request));
    const path = bytes(host.*.request_path.?(request));
    const is_get = std.mem.eql(u8, method, "GET");
    if (is_get and std.mem.eql(u8, path, "/")) {
        text(host, response, 200, "Hello, World!");
    } else if (std.mem.eql(u8, method, "POST") and std.mem.eql(u8, path, "/echo")) {
        respond(host, response, 200, "application/octet-stream", bytes(host.*.request_body.?(request)));
    } else if (is_get and std.mem.startsWith(u8, path, "/alloc/")) {
        allocKib(host, request, response, path);
    } else if (is_get and std.mem.eql(u8, path, "/upstream")) {
        upstream(host, request, response);
    } else if (is_get and std.mem.eql(u8, path, "/greeting")) {
        text(host, response, 200, greeting);
    } else {
        text(host, response, 404, "not found\n");
    }
}

fn init(host: Host, config: c.CellaStr) callconv(.c) i32 {
    _ = host;
    const text_config = bytes(config);
    const key = "greeting = \"";
    if (std.mem.indexOf(u8, text_config, key)) |start| {
        const rest = text_config[start + key.len ..];
        const end = std.mem.indexOfScalar(u8, rest, '"') orelse rest.len;
        const n = @min(end, greeting_buf.len);
        @memcpy(greeting_buf[0..n], rest[0..n]);
        greeting = greeting_buf[0..n];
    }
    return 0;
}

const plugin = c.CellaPlugin{
    .size = @sizeOf(c.CellaPlugin),
    .abi_version = c.CELLA_ABI_VERSION,
    .init = init,
    .deinit = null,
    .handle = handle,
};

export fn cella_plugin_entry() *const c.CellaPlugin {
    return &plugin;
}
