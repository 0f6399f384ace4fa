#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into fuzz/corpus/<target>/ (the committed
seeds are its output; rerun it after changing a seed here). Each seed is a meaningful case:
valid requests and bodies, smuggling shapes, limits at their edge. The input layouts are
described in fuzz/src/<target>.rs."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

HEAD = {
    "get": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "get_query_http10_keep_alive": b"GET /a/b?c=d&e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "post_content_length": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "post_chunked": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "put_expect_continue": b"PUT /up HTTP/1.1\r\nHost: a:8080\r\nExpect: 100-continue\r\n"
    b"Content-Length: 3\r\nConnection: close\r\n\r\n",
    "options_asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute_form": b"GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
    "absolute_form_empty_path": b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute_form_query_only": b"GET http://x?/panic HTTP/1.1\r\nHost: x\r\n\r\n",
    "connect_authority_form": b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    "host_ipv6_and_obs_text": b"GET /caf%C3%A9 HTTP/1.1\r\nHost: [::1]:8080\r\n"
    b"X-Obs: \xe9t\xe9\r\nCookie: a=b; c=d\r\n\r\n",
    "smuggle_cl_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    "smuggle_te_list": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    "smuggle_two_lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n"
    b"Content-Length: 6\r\n\r\n",
    "smuggle_bare_lf": b"GET / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n",
    "smuggle_obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "smuggle_space_before_colon": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "host_mismatch": b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
    "fragment": b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    "version_2": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
}

# Settings of the chunked target: split, room / 16, extension limit, trailer limit.
ROOMY = b"~~~~"  # pieces of 1 to 126 bytes, 2016 bytes of room, limits of 126
CHUNKED = {
    "one_chunk": ROOMY + b"5\r\nhello\r\n0\r\n\r\n",
    "two_chunks_byte_by_byte": b"\x01~~~" + b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    "extensions": ROOMY + b'5;name=value\r\nhello\r\n6 ; a ; b = "q\\"x\xe9"\r\n world\r\n'
    b"0;last\r\n\r\n",
    "trailers": b"\x03~~~" + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nChecksum: abc\tdef\r\n\r\n",
    "pipelined_request_after_body": ROOMY + b"0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "upper_hex_leading_zeros": b"\x00~~~" + b"000A\r\n0123456789\r\n00\r\n\r\n",
    "sixteen_digit_size": ROOMY + b"000000000000000F\r\n0123456789abcde\r\n0\r\n\r\n",
    "huge_size": ROOMY + b"FFFFFFFFFFFFFFFF\r\nabc",
    "seventeen_digits": ROOMY + b"00000000000000001\r\nx\r\n0\r\n\r\n",
    "junk_after_size": ROOMY + b"2 xyz\r\nhi\r\n0\r\n\r\n",
    "empty_extension": ROOMY + b"2;\r\nhi\r\n0\r\n\r\n",
    "bare_lf_after_last_chunk": ROOMY + b"0\r\n\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare_lf_in_size_line": ROOMY + b"5\nhello\r\n0\r\n\r\n",
    "bare_lf_in_trailer": ROOMY + b"0\r\nX: a\nY: b\r\n\r\n",
    "data_without_crlf": ROOMY + b"2\r\nhiX\r\n0\r\n\r\n",
    "extension_at_limit": b"~~\x08~" + b"1;abcdefgh\r\nx\r\n0\r\n\r\n",
    "extension_past_limit": b"~~\x08~" + b"1;abcdefghi\r\nx\r\n0\r\n\r\n",
    "trailer_at_limit": b"~~~\x10" + b"0\r\na: 12345678\r\nb: 12\r\n\r\n",
    "trailer_past_limit": b"~~~\x10" + b"0\r\na: 12345678\r\nb: 123\r\n\r\n",
    "room_at_limit": b"\x05\x01~~" + b"10\r\n0123456789abcdef\r\n0\r\n\r\n",
    "room_past_limit": b"\x05\x01~~" + b"11\r\n0123456789abcdefg\r\n0\r\n\r\n",
}


def response(status, name, value, persistence=1, capacity=255, length=5, date=784111777):
    settings = struct.pack("<HBBQIB", status - 100, persistence, capacity, length, date, len(name))
    return settings + name + value


RESPONSE_HEADERS = {
    "request_id": response(200, b"x-request-id", b"abc123"),
    "content_type_404": response(404, b"content-type", b"text/plain; charset=utf-8"),
    "set_cookie_204_close": response(204, b"set-cookie", b"a=b; Path=/; HttpOnly", persistence=0),
    "cache_control_304_http10": response(304, b"cache-control", b"max-age=0", persistence=2),
    "unknown_status_199": response(199, b"x", b"y", length=0),
    "large_length_small_sink": response(200, b"etag", b'"abc"', capacity=20, length=2**64 - 1),
    "tab_inside_value": response(500, b"x-t", b"a\tb"),
    "utf8_value": response(200, b"x-u", b"caf\xc3\xa9"),
    "empty_value": response(200, b"x-empty", b""),
    "runtime_owned_name": response(200, b"Content-Length", b"0"),
    "injection_crlf": response(200, b"x-a", b"b\r\nset-cookie: evil=1"),
    "injection_bare_lf": response(200, b"x-a", b"b\nset-cookie: evil=1"),
    "injection_bare_cr": response(200, b"x-a", b"b\rset-cookie: evil=1"),
    "nul_in_value": response(200, b"x-a", b"b\x00c"),
    "space_in_name": response(200, b"x a", b"b"),
    "colon_in_name": response(200, b"x:a", b"b"),
    "empty_name": response(200, b"", b"b"),
    "non_utf8_name": response(200, b"x\xff", b"b"),
}


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as file:
            file.write(data)


write("head", HEAD)
write("chunked", CHUNKED)
write("response_headers", RESPONSE_HEADERS)
