package compat_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// pattern is the byte stream the worker scripts write: byte i is i*7 mod 251.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 % 251)
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// registerStream registers a function of the given streaming mode on w
// (see register_stream in testdata/node/worker.mjs) and binds it to an
// HTTP route when path is not empty.
func registerStream(t *testing.T, ctx context.Context, w *workerProc, name, mode, method, path string, extra map[string]any) string {
	t.Helper()
	fn := w.fn(name)
	cmd := map[string]any{"op": "register_stream", "ref": name, "function_id": fn, "mode": mode}
	for k, v := range extra {
		cmd[k] = v
	}
	w.do(t, ctx, cmd, "function_registered")
	if path != "" {
		w.do(t, ctx, map[string]any{"op": "bind", "ref": name + "-route", "type_id": "http", "function_id": fn,
			"config": map[string]any{"api_path": path, "http_method": method}}, "bound")
	}
	return fn
}

// TestStreamedHTTP: through each SDK's request_body and response channels
// (spec §3.3), a 20 MiB upload and a multipart body reach the function
// intact, server-sent events reach the client one by one while the
// function is still writing, a binary download arrives intact, and a
// multipart body cut off mid-stream ends early for the function without
// leaving anything behind in the engine.
func TestStreamedHTTP(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	srv, base := startHTTPServer(t, ctx)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	ws := make(map[lang]*workerProc)
	for _, l := range langs {
		ws[l] = startWorker(t, l, srv.URL(), "st"+string(l))
	}
	for _, l := range langs {
		ws[l].ready(t, ctx)
	}
	for _, l := range langs {
		w := ws[l]
		t.Run(string(l), func(t *testing.T) {
			p := "stream/" + string(l)
			shaFn := registerStream(t, ctx, w, "sha", "sha", "POST", p+"/upload", nil)
			formFn := registerStream(t, ctx, w, "multipart", "multipart", "POST", p+"/form", nil)
			registerStream(t, ctx, w, "sse", "sse", "GET", p+"/events", map[string]any{"count": 4, "interval_ms": 300})
			const dlSize = 8<<20 + 12345
			registerStream(t, ctx, w, "download", "download", "GET", p+"/download", map[string]any{"size": dlSize})

			t.Run("20 MiB upload", func(t *testing.T) {
				body := randomBytes(t, 20<<20)
				status, got := httpDo(t, ctx, client, "POST", base+"/"+p+"/upload", string(body),
					map[string]string{"Content-Type": "application/octet-stream"})
				var res struct {
					Size   int    `json:"size"`
					SHA256 string `json:"sha256"`
				}
				if err := json.Unmarshal(got, &res); err != nil || status != 200 || res.Size != len(body) || res.SHA256 != sum(body) {
					t.Fatalf("upload through %s: %d %s, want size %d sha256 %s", l, status, got, len(body), sum(body))
				}
				// The request object had no body: it was streamed.
				inv := w.invoked(t, ctx, shaFn, nil)
				if d := inv.obj("data"); d["body"] != nil || d["request_body"] != "<channel read>" || d["response"] != "<channel write>" {
					t.Errorf("request object of a streamed body: body %v, request_body %v, response %v", d["body"], d["request_body"], d["response"])
				}
			})

			t.Run("multipart", func(t *testing.T) {
				file := randomBytes(t, 3<<20)
				var buf bytes.Buffer
				mw := multipart.NewWriter(&buf)
				mw.WriteField("note", "hello from go")
				fw, _ := mw.CreateFormFile("blob", "blob.bin")
				fw.Write(file)
				mw.Close()
				status, got := httpDo(t, ctx, client, "POST", base+"/"+p+"/form", buf.String(),
					map[string]string{"Content-Type": mw.FormDataContentType()})
				var res struct {
					Parts []struct {
						Name, Filename *string
						Size           int
						SHA256         string
					}
				}
				if err := json.Unmarshal(got, &res); err != nil || status != 200 || len(res.Parts) != 2 {
					t.Fatalf("multipart through %s: %d %s", l, status, got)
				}
				note, blob := res.Parts[0], res.Parts[1]
				if *note.Name != "note" || note.SHA256 != sum([]byte("hello from go")) ||
					*blob.Name != "blob" || blob.Filename == nil || *blob.Filename != "blob.bin" || blob.Size != len(file) || blob.SHA256 != sum(file) {
					t.Errorf("parts seen by %s: %s", l, got)
				}
			})

			t.Run("server-sent events arrive as written", func(t *testing.T) {
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/"+p+"/events", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
					t.Fatalf("events: %d %v", resp.StatusCode, resp.Header)
				}
				var arrived []int64
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
						arrived = append(arrived, time.Now().UnixMilli())
						if want := fmt.Sprintf(`{"n":%d}`, len(arrived)-1); data != want {
							t.Errorf("event %d: %q, want %q", len(arrived)-1, data, want)
						}
					}
				}
				if err := sc.Err(); err != nil || len(arrived) != 4 {
					t.Fatalf("read %d events, err %v; want 4 and a clean end", len(arrived), err)
				}
				sent := w.waitEvents(t, ctx, 4, "sse_sent events", func(e event) bool { return e.str("event") == "sse_sent" })
				last := int64(num(sent[3]["t"]))
				// The first event reached the client before the function
				// wrote its last one (~900 ms later): nothing was buffered.
				if arrived[0] >= last {
					t.Errorf("first event arrived at %d, after the last was written at %d: the stream was buffered", arrived[0], last)
				}
				for i := range arrived {
					if sentAt := int64(num(sent[i]["t"])); arrived[i]-sentAt > 250 {
						t.Errorf("event %d arrived %d ms after it was written", i, arrived[i]-sentAt)
					}
				}
			})

			t.Run("binary download", func(t *testing.T) {
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/"+p+"/download", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" ||
					resp.Header.Get("X-Size") != fmt.Sprint(dlSize) {
					t.Fatalf("download: %d %v %v", resp.StatusCode, resp.Header, err)
				}
				if len(got) != dlSize || sum(got) != sum(pattern(dlSize)) {
					t.Errorf("download of %d bytes: got %d bytes, intact %v", dlSize, len(got), sum(got) == sum(pattern(dlSize)))
				}
			})

			t.Run("multipart cut off mid-stream", func(t *testing.T) {
				var buf bytes.Buffer
				mw := multipart.NewWriter(&buf)
				fw, _ := mw.CreateFormFile("blob", "blob.bin")
				fw.Write(randomBytes(t, 1<<20))
				mw.Close()
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(base, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(conn, "POST /%s/form HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
					p, mw.FormDataContentType(), buf.Len())
				conn.Write(buf.Bytes()[:200<<10])
				// The function is reading: then the client vanishes.
				w.waitEvent(t, ctx, "invocation of "+formFn, func(e event) bool {
					h, _ := e.obj("data")["headers"].(map[string]any)
					return e.str("event") == "invoked" && e.str("function_id") == formFn && h["content-length"] == fmt.Sprint(buf.Len())
				})
				cut := time.Now()
				conn.Close()
				ev := w.waitEvent(t, ctx, "the function's body_error", func(e event) bool {
					return e.str("event") == "body_error" && e.str("function_id") == formFn
				})
				// Well within default_timeout (5 s): the cut itself ended the body.
				if d := time.Since(cut); d > 3*time.Second {
					t.Errorf("the function saw the cut body's end %v after the client left", d)
				}
				if n := num(ev["received"]); n >= buf.Len() {
					t.Errorf("function received %d of %d bytes of a cut body", n, buf.Len())
				}
				// Nothing is left hanging: the request's channels go and
				// the route still serves.
				for srv.Engine().Channels().Len() != 0 {
					if !waitTick(ctx, 20*time.Millisecond) {
						t.Fatalf("%d channels left after the cut request", srv.Engine().Channels().Len())
					}
				}
				status, got := httpDo(t, ctx, client, "POST", base+"/"+p+"/upload", "after", map[string]string{"Content-Type": "text/plain"})
				if status != 200 || !strings.Contains(string(got), sum([]byte("after"))) {
					t.Errorf("upload after the cut request: %d %s", status, got)
				}
			})
		})
	}
}

// TestChannelsBetweenWorkers: engine::channels::create through each SDK's
// createChannel: one worker writes, a worker of the other language reads
// the ref it was passed; a reader that does not read holds the writer back
// with the engine's buffer bounded and nothing lost; a wrong key is a 404;
// an oversized item closes the writer with 1009.
func TestChannelsBetweenWorkers(t *testing.T) {
	t.Parallel()
	requireSDKs(t)
	ctx := testContext(t)
	srv, _ := startHTTPServer(t, ctx)
	ws := make(map[lang]*workerProc)
	for _, l := range langs {
		ws[l] = startWorker(t, l, srv.URL(), "ch"+string(l))
	}
	for _, l := range langs {
		ws[l].ready(t, ctx)
	}
	for _, l := range langs {
		registerStream(t, ctx, ws[l], "consume", "consume", "", "", nil)
		registerStream(t, ctx, ws[l], "slow", "consume", "", "", map[string]any{"delay_ms": 1500})
	}
	pipe := func(t *testing.T, from, to *workerProc, fn string, size int, extra map[string]any) event {
		t.Helper()
		id := fmt.Sprintf("pipe-%d", from.calls.Add(1))
		cmd := map[string]any{"op": "channel_pipe", "id": id, "function_id": fn, "size": size}
		for k, v := range extra {
			cmd[k] = v
		}
		from.send(t, cmd)
		ev := from.waitEvent(t, ctx, "piped "+id, func(e event) bool { return e.str("event") == "piped" && e.str("id") == id })
		res := ev.obj("result")
		if num(res["size"]) != size || res["sha256"] != ev["sha256"] {
			t.Fatalf("%s -> %s: reader got %v, want %d bytes with sha256 %v", from.lang, to.lang, res, size, ev["sha256"])
		}
		return ev
	}
	t.Run("node to python", func(t *testing.T) { pipe(t, ws[node], ws[python], ws[python].fn("consume"), 5<<20, nil) })
	t.Run("python to node", func(t *testing.T) { pipe(t, ws[python], ws[node], ws[node].fn("consume"), 5<<20, nil) })

	t.Run("reader that does not read", func(t *testing.T) {
		// 24 MiB into a channel of 4 items whose reader waits 1.5 s before
		// it opens its end: the writer must wait for it.
		const size = 24 << 20
		done := make(chan event, 1)
		go func() {
			id := fmt.Sprintf("pipe-%d", ws[node].calls.Add(1))
			ws[node].send(t, map[string]any{"op": "channel_pipe", "id": id, "function_id": ws[python].fn("slow"), "size": size, "buffer_size": 4})
			done <- ws[node].waitEvent(t, ctx, "piped "+id, func(e event) bool { return e.str("event") == "piped" && e.str("id") == id })
		}()
		maxBuffered := 0
		var ev event
	wait:
		for {
			select {
			case ev = <-done:
				break wait
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(10 * time.Millisecond):
				maxBuffered = max(maxBuffered, srv.Engine().Channels().Buffered())
			}
		}
		res := ev.obj("result")
		if num(res["size"]) != size || res["sha256"] != ev["sha256"] {
			t.Fatalf("slow reader got %v, want %d bytes with sha256 %v (nothing lost)", res, size, ev["sha256"])
		}
		start := ws[python].waitEvent(t, ctx, "consume_start", func(e event) bool {
			return e.str("event") == "consume_start" && e.str("function_id") == ws[python].fn("slow")
		})
		if wrote, began := int64(num(ev["write_done_t"])), int64(num(start["t"])); wrote <= began {
			t.Errorf("writer finished at %d, before the reader began at %d: it was not held back", wrote, began)
		}
		// 4 items of the SDK's 64 KiB frames.
		if maxBuffered > 4*64<<10 {
			t.Errorf("engine buffered up to %d bytes for a channel of 4 items", maxBuffered)
		}
		t.Logf("max bytes buffered in the engine: %d", maxBuffered)
	})

	t.Run("wrong key", func(t *testing.T) {
		ws[node].send(t, map[string]any{"op": "channel_bad_key", "id": "bk"})
		ev := ws[node].waitEvent(t, ctx, "bad_key", func(e event) bool { return e.str("event") == "bad_key" })
		if !strings.Contains(ev.str("error"), "404") {
			t.Errorf("reading with a wrong key: %v, want a 404 refusal", ev)
		}
	})

	t.Run("oversized item", func(t *testing.T) {
		ws[node].send(t, map[string]any{"op": "channel_oversized", "id": "big", "size": 5 << 20})
		ev := ws[node].waitEvent(t, ctx, "oversized", func(e event) bool { return e.str("event") == "oversized" })
		if num(ev["code"]) != 1009 || ev.str("reason") == "" {
			t.Errorf("5 MiB text item: writer closed with %v, want 1009 and a reason", ev)
		}
	})
}
