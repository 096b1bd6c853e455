package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iii-workbench/iii/engine/enginetest"
)

// TestTooLargeNoReset sends bodies 64 times the limit, many times, with a
// Content-Length (refused before reading) and chunked (refused while
// reading), from a client that sends the whole request before it reads:
// every try reads the 413, none ends in a reset while sending.
func TestTooLargeNoReset(t *testing.T) {
	ctx := enginetest.Context(t)
	const limit = 64 << 10
	const bigSize = 4 << 20 // 64 times the limit, within what the server drains
	f := startServer(t, ctx, "body_limit: 65536, stream_body_limit: 65536")
	w, _ := f.connect(t, ctx, "http-upload")
	must(t, w.RegisterFunction("t::upload", func(context.Context, json.RawMessage) (any, error) {
		return map[string]any{"status_code": 200}, nil
	}))
	route(w, t, "t::upload", "POST", "upload", nil)
	f.waitStatus(t, ctx, "POST", "/upload", 200)

	big := make([]byte, bigSize)
	const tries = 20
	// A JSON body is read whole (body_limit): refused from its
	// Content-Length, or while reading when chunked. Any other body is
	// streamed (stream_body_limit) and refused from its Content-Length.
	cases := []struct {
		name, contentType string
		chunked           bool
	}{
		{"json content-length", "application/json", false},
		{"json chunked", "application/json", true},
		{"streamed content-length", "application/octet-stream", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]int{}
			for range tries {
				got[rawPost(t, ctx, f.mod.Addr(), big, tc.contentType, tc.chunked)]++
			}
			if got["413 Request Entity Too Large"] != tries {
				t.Errorf("%d tries of a %d-byte body over a %d-byte limit: %v; want 413 every time", tries, len(big), limit, got)
			}
		})
	}
}

// rawPost sends a POST with body over a fresh TCP connection the way
// simple clients do (the whole body at once, the response read while
// sending) and returns the response status, or the read error.
func rawPost(t *testing.T, ctx context.Context, addr string, body []byte, contentType string, chunked bool) string {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n", addr, contentType)
	if chunked {
		fmt.Fprintf(&req, "Transfer-Encoding: chunked\r\n\r\n%x\r\n", len(body))
		req.Write(body)
		req.WriteString("\r\n0\r\n\r\n")
	} else {
		fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n", len(body))
		req.Write(body)
	}
	// Like Python's requests and other simple clients: the whole request
	// first, then the response. A failed send ends the try, as it does
	// for them (the server stopped reading and closed).
	if _, err := conn.Write(req.Bytes()); err != nil {
		return "send failed: " + err.Error()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		if strings.Contains(err.Error(), "reset") {
			return "connection reset"
		}
		return err.Error()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status
}
