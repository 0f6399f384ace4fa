// The shared plugin app, in C++17: GET / hello, POST /echo, GET /alloc/{kib} (a std::vector,
// whose operator new calls malloc, and so allocates in the request's arena), GET
// /upstream?to=IP:PORT (an outbound call through the host), GET /greeting (set by init from the
// config file's [plugin] section).
// C++ only: GET /exception throws a std::runtime_error (its object and message are allocated in
// the arena) and catches it inside `handle`: no exception may cross into the host.
//
// Build: g++ -std=c++17 -shared -fPIC -O2 -I runtime/include -o libapp_cpp.so tests/plugins/cpp/app.cpp

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cella.h"

namespace {

std::string greeting = "no greeting";

std::string_view view(CellaStr s) {
    return s.len == 0 ? std::string_view() : std::string_view(reinterpret_cast<const char *>(s.ptr), s.len);
}

CellaStr str(std::string_view s) {
    return CellaStr{reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

// One request: the host, its request and the response being built.
class Exchange {
  public:
    Exchange(const CellaHost *host, const CellaRequest *request, CellaResponse *response)
        : host_(host), request_(request), response_(response) {}

    std::string_view method() const { return view(host_->request_method(request_)); }
    std::string_view path() const { return view(host_->request_path(request_)); }
    std::string_view query() const { return view(host_->request_query(request_)); }
    std::string_view body() const { return view(host_->request_body(request_)); }

    void respond(uint16_t status, std::string_view content_type, std::string_view body) {
        host_->response_set_status(response_, status);
        host_->response_add_header(response_, CELLA_STR("content-type"), str(content_type));
        host_->response_write(response_, str(body));
    }

    void text(uint16_t status, std::string_view message) {
        respond(status, "text/plain; charset=utf-8", message);
    }

    void alloc() {
        std::string_view digits = path().substr(std::string_view("/alloc/").size());
        size_t kib = 0;
        for (char c : digits) {
            if (c < '0' || c > '9') return text(400, "bad kib\n");
            kib = kib * 10 + static_cast<size_t>(c - '0');
        }
        // Past the arena, operator new's malloc cancels the request: the host answers 500.
        std::vector<unsigned char> buffer(kib * 1024, 1);
        text(200, std::to_string(buffer.size()));
    }

    void upstream() {
        std::string_view q = query();
        if (q.substr(0, 3) != "to=") return text(400, "expected ?to=IP:PORT\n");
        uint32_t socket = 0;
        if (host_->tcp_connect(request_, str(q.substr(3)), 5000, &socket) != CELLA_STATUS_OK) {
            return text(502, "connect failed\n");
        }
        constexpr std::string_view get = "GET / HTTP/1.1\r\nhost: upstream\r\nconnection: close\r\n\r\n";
        if (host_->tcp_write(request_, socket, str(get), 5000) != CELLA_STATUS_OK) {
            return text(502, "write failed\n");
        }
        std::string received;
        char chunk[512];
        for (;;) {
            size_t n = 0;
            auto buffer = reinterpret_cast<uint8_t *>(chunk);
            if (host_->tcp_read(request_, socket, buffer, sizeof chunk, 5000, &n) != CELLA_STATUS_OK) {
                return text(502, "read failed\n");
            }
            if (n == 0) break;
            received.append(chunk, n);
        }
        host_->tcp_close(request_, socket);
        size_t head_end = received.find("\r\n\r\n");
        if (head_end == std::string::npos || received.size() < 12) {
            return text(502, "bad upstream response\n");
        }
        auto status = static_cast<uint16_t>(std::atoi(received.c_str() + 9));
        respond(status, "application/octet-stream", std::string_view(received).substr(head_end + 4));
    }

    void exception() {
        try {
            throw std::runtime_error("thrown in a handler, " + std::string(path()));
        } catch (const std::exception &error) {
            text(500, std::string("caught: ") + error.what() + "\n");
        }
    }

    void route() {
        std::string_view m = method(), p = path();
        if (m == "GET" && p == "/") {
            text(200, "Hello, World!");
        } else if (m == "POST" && p == "/echo") {
            respond(200, "application/octet-stream", body());
        } else if (m == "GET" && p.substr(0, 7) == "/alloc/") {
            alloc();
        } else if (m == "GET" && p == "/upstream") {
            upstream();
        } else if (m == "GET" && p == "/greeting") {
            text(200, greeting);
        } else if (m == "GET" && p == "/exception") {
            exception();
        } else {
            text(404, "not found\n");
        }
    }

  private:
    const CellaHost *host_;
    const CellaRequest *request_;
    CellaResponse *response_;
};

void handle(const CellaHost *host, const CellaRequest *request, CellaResponse *response) {
    Exchange exchange(host, request, response);
    try {
        exchange.route();
    } catch (...) {
        // Nothing may unwind into the host.
        exchange.text(500, "unexpected exception\n");
    }
}

// Reads `greeting = "..."` from the [plugin] section.
int32_t init(const CellaHost *, CellaStr config) {
    std::string_view text = view(config);
    constexpr std::string_view key = "greeting = \"";
    size_t start = text.find(key);
    if (start != std::string_view::npos) {
        start += key.size();
        size_t end = text.find('"', start);
        greeting = std::string(text.substr(start, end == std::string_view::npos ? end : end - start));
    }
    return 0;
}

const CellaPlugin PLUGIN = {
    sizeof(CellaPlugin), CELLA_ABI_VERSION, init, nullptr, handle,
};

}  // namespace

// Declared with C linkage by cella.h.
const CellaPlugin *cella_plugin_entry(void) { return &PLUGIN; }
