## The shared plugin app, in Nim: GET / hello, POST /echo, GET /alloc/{kib} (with a Nim `seq`,
## which -d:useMalloc turns into malloc, and so into the request's arena), GET /upstream?to=IP:PORT
## (an outbound call through the host), GET /greeting (set by init from [plugin]).
##
## Build: nim c --app:lib --mm:arc --threads:on -d:useMalloc -d:release -d:noSignalHandler \
##          --passC:-Iruntime/include -o:libapp_nim.so tests/plugins/nim/app.nim
## (-d:noSignalHandler: Nim must not take over SIGSEGV, which cella uses for stack overflows.)
import std/strutils

type
  CellaStr {.importc, header: "cella.h", bycopy.} = object
    data {.importc: "ptr".}: ptr UncheckedArray[uint8]
    len: csize_t
  CellaRequest {.importc, header: "cella.h", incompleteStruct.} = object
  CellaResponse {.importc, header: "cella.h", incompleteStruct.} = object
  CellaHost {.importc, header: "cella.h", bycopy.} = object
    request_method: proc (request: ptr CellaRequest): CellaStr {.cdecl.}
    request_path: proc (request: ptr CellaRequest): CellaStr {.cdecl.}
    request_query: proc (request: ptr CellaRequest): CellaStr {.cdecl.}
    request_body: proc (request: ptr CellaRequest): CellaStr {.cdecl.}
    response_set_status: proc (response: ptr CellaResponse, status: uint16): cint {.cdecl.}
    response_add_header: proc (response: ptr CellaResponse, name, value: CellaStr): cint {.cdecl.}
    response_write: proc (response: ptr CellaResponse, bytes: CellaStr): cint {.cdecl.}
    tcp_connect: proc (request: ptr CellaRequest, address: CellaStr, timeoutMs: uint32,
                       socket: ptr uint32): cint {.cdecl.}
    tcp_read: proc (request: ptr CellaRequest, socket: uint32, buffer: ptr uint8, capacity: csize_t,
                    timeoutMs: uint32, read: ptr csize_t): cint {.cdecl.}
    tcp_write: proc (request: ptr CellaRequest, socket: uint32, bytes: CellaStr,
                     timeoutMs: uint32): cint {.cdecl.}
    tcp_close: proc (request: ptr CellaRequest, socket: uint32): cint {.cdecl.}
    log: proc (request: ptr CellaRequest, message: CellaStr) {.cdecl.}
  CellaPlugin {.importc, header: "cella.h", bycopy.} = object
    size: uint32
    abi_version: uint32
    init: proc (host: ptr CellaHost, config: CellaStr): int32 {.cdecl.}
    deinit: proc () {.cdecl.}
    handle: proc (host: ptr CellaHost, request: ptr CellaRequest, response: ptr CellaResponse) {.cdecl.}

var CELLA_ABI_VERSION {.importc, header: "cella.h", nodecl.}: uint32

proc toNim(s: CellaStr): string =
  result = newString(int(s.len))
  if s.len > 0:
    copyMem(addr result[0], s.data, int(s.len))

proc cstr(s: string): CellaStr =
  ## Borrowed view of `s`; valid while `s` lives (the host copies what it keeps).
  if s.len > 0:
    result.data = cast[ptr UncheckedArray[uint8]](unsafeAddr s[0])
  result.len = csize_t(s.len)

proc respond(host: ptr CellaHost, response: ptr CellaResponse, status: int, contentType, body: string) =
  discard host.response_set_status(response, uint16(status))
  discard host.response_add_header(response, cstr("content-type"), cstr(contentType))
  discard host.response_write(response, cstr(body))

proc text(host: ptr CellaHost, response: ptr CellaResponse, status: int, message: string) =
  respond(host, response, status, "text/plain; charset=utf-8", message)

# Plain zero-initialised globals: nothing here depends on Nim's module initialisation.
var greetingBuffer: array[64, char]
var greetingLen: int
var hasGreeting: bool

proc allocKib(host: ptr CellaHost, response: ptr CellaResponse, path: string) =
  var kib: int
  try:
    kib = parseInt(path["/alloc/".len .. ^1])
  except ValueError:
    text(host, response, 400, "bad kib\n")
    return
  var buffer = newSeq[uint8](kib * 1024)
  for i in 0 ..< buffer.len:
    buffer[i] = 1
  text(host, response, 200, $buffer.len)

proc upstream(host: ptr CellaHost, request: ptr CellaRequest, response: ptr CellaResponse) =
  let query = toNim(host.request_query(request))
  if not query.startsWith("to="):
    text(host, response, 400, "expected ?to=IP:PORT\n")
    return
  let address = query[3 .. ^1]
  var socket: uint32
  if host.tcp_connect(request, cstr(address), 5000, addr socket) != 0:
    text(host, response, 502, "connect failed\n")
    return
  let get = "GET / HTTP/1.1\r\nhost: upstream\r\nconnection: close\r\n\r\n"
  if host.tcp_write(request, socket, cstr(get), 5000) != 0:
    text(host, response, 502, "write failed\n")
    return
  var received = newString(64 * 1024)
  var used = 0
  while used < received.len:
    var n: csize_t
    if host.tcp_read(request, socket, cast[ptr uint8](addr received[used]), csize_t(received.len - used), 5000, addr n) != 0:
      text(host, response, 502, "read failed\n")
      return
    if n == 0: break
    used += int(n)
  discard host.tcp_close(request, socket)
  received.setLen(used)
  let headEnd = received.find("\r\n\r\n")
  if headEnd < 0 or received.len < 12:
    text(host, response, 502, "bad upstream response\n")
    return
  var status: int
  try:
    status = parseInt(received[9 .. 11])
  except ValueError:
    text(host, response, 502, "bad status\n")
    return
  respond(host, response, status, "application/octet-stream", received[headEnd + 4 .. ^1])

proc route(host: ptr CellaHost, request: ptr CellaRequest, response: ptr CellaResponse)

proc handle(host: ptr CellaHost, request: ptr CellaRequest, response: ptr CellaResponse) {.cdecl.} =
  ## No Nim exception may escape into the host: report it and answer 500.
  try:
    route(host, request, response)
  except CatchableError as error:
    host.log(request, cstr(error.msg))
    text(host, response, 500, "plugin error\n")

proc route(host: ptr CellaHost, request: ptr CellaRequest, response: ptr CellaResponse) =
  let meth = toNim(host.request_method(request))
  let path = toNim(host.request_path(request))
  if meth == "GET" and path == "/":
    text(host, response, 200, "Hello, World!")
  elif meth == "POST" and path == "/echo":
    respond(host, response, 200, "application/octet-stream", toNim(host.request_body(request)))
  elif meth == "GET" and path.startsWith("/alloc/"):
    allocKib(host, response, path)
  elif meth == "GET" and path == "/upstream":
    upstream(host, request, response)
  elif meth == "GET" and path == "/greeting":
    if not hasGreeting:
      text(host, response, 200, "no greeting")
    else:
      var greeting = newString(greetingLen)
      for i in 0 ..< greetingLen: greeting[i] = greetingBuffer[i]
      text(host, response, 200, greeting)
  else:
    text(host, response, 404, "not found\n")

proc pluginInit(host: ptr CellaHost, config: CellaStr): int32 {.cdecl.} =
  let config = toNim(config)
  let key = "greeting = \""
  let start = config.find(key)
  if start >= 0:
    let rest = config[start + key.len .. ^1]
    var stop = rest.find('"')
    if stop < 0: stop = rest.len
    greetingLen = min(stop, greetingBuffer.len)
    for i in 0 ..< greetingLen: greetingBuffer[i] = rest[i]
    hasGreeting = true
  result = 0

var plugin: CellaPlugin

# Declared as cella.h declares it (`const CellaPlugin *cella_plugin_entry(void)`).
proc cella_plugin_entry(): ptr CellaPlugin {.exportc, dynlib, cdecl,
    codegenDecl: "N_LIB_EXPORT const $1 $2$3".} =
  plugin.size = uint32(sizeof(CellaPlugin))
  plugin.abi_version = CELLA_ABI_VERSION
  plugin.init = pluginInit
  plugin.deinit = nil
  plugin.handle = handle
  result = addr plugin
