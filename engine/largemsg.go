package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/coder/websocket"

	"github.com/iii-workbench/iii/engine/protocol"
)

// Message size limits. The 0.25+ SDKs read and send JSON messages up to
// MaxMessageBytes (sending those over FragmentThreshold as a fragmented
// message); the engine reads messages up to Options.MaxFrameBytes
// (64 MiB by default), whether one frame or many fragments.
const (
	MaxMessageBytes = 64 << 20
	// MaxFrameBytesLimit bounds Options.MaxFrameBytes: each worker socket
	// may hold one message of that size in memory while reading it.
	MaxFrameBytesLimit = 256 << 20
	// FragmentThreshold: the engine writes a message larger than this as
	// fragments of FragmentBytes, so a slow reader shows progress (see
	// stallLoop) and no single frame exceeds what the SDKs send themselves.
	FragmentThreshold = 16 << 20
	FragmentBytes     = 1 << 20
)

// fragmentThreshold is FragmentThreshold; tests lower it.
var fragmentThreshold = FragmentThreshold

// CodePayloadTooLarge is the error of a call whose message is over a size
// limit (the code the 0.25 SDKs use for the same refusal on their side).
const CodePayloadTooLarge = "payload_too_large"

// tooBig describes a message over the read limit that was read and
// discarded: its size and what could be told of it from its first and last
// bytes.
type tooBig struct {
	size       int64
	limit      int64
	typ        string // message type, if seen
	invocation string // invocation_id, if seen
	function   string // function_id, if seen
}

func (t *tooBig) Error() string {
	return fmt.Sprintf("%s message of %d bytes is over the engine's limit of %d bytes (engine.max_frame_bytes)",
		orUnknown(t.typ), t.size, t.limit)
}

func orUnknown(s string) string {
	if s == "" {
		return "a"
	}
	return "a " + s
}

// errDrainTooLong is returned when an over-limit message goes on for more
// than drainFactor times the limit: the reader stops discarding and the
// socket is closed with 1009.
var errDrainTooLong = errors.New("message far over the read limit")

const (
	edgeBytes   = 4 << 10 // kept from each end of an over-limit message
	drainFactor = 4
)

// msgReader reads whole messages from one socket; it belongs to the
// socket's reader goroutine. It keeps what every message would otherwise
// allocate anew (the limiting reader) and sizes each message's buffer by
// the one before.
type msgReader struct {
	ws    *websocket.Conn
	limit int64
	lr    io.LimitedReader
	hint  int // capacity for the next message's buffer
}

func newMsgReader(ws *websocket.Conn, limit int64) *msgReader {
	return &msgReader{ws: ws, limit: limit, hint: 512}
}

// read reads the next message, text or binary, a single frame or
// fragments, up to the limit. A message over the limit is read to its end
// and discarded (the connection stays usable) and reported as a *tooBig.
// The returned bytes are the caller's.
func (m *msgReader) read(ctx context.Context) (websocket.MessageType, []byte, error) {
	typ, r, err := m.ws.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	limit := m.limit
	m.lr = io.LimitedReader{R: r, N: limit + 1}
	b, err := readAll(&m.lr, make([]byte, 0, m.hint))
	m.lr.R = nil
	if err != nil {
		return 0, nil, err
	}
	// Room for a message a little larger than this one, within bounds.
	m.hint = min(max(len(b)+len(b)/4+64, 512), 64<<10)
	if int64(len(b)) <= limit {
		return typ, b, nil
	}
	head := bytes.Clone(b[:min(len(b), edgeBytes)])
	tail := bytes.Clone(b[len(b)-min(len(b), edgeBytes):])
	size := int64(len(b))
	b = nil
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		size += int64(n)
		if tail = append(tail, chunk[:n]...); len(tail) > 2*edgeBytes {
			tail = append(tail[:0], tail[len(tail)-edgeBytes:]...)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, nil, err
		}
		if size > drainFactor*limit {
			return 0, nil, fmt.Errorf("%w: %d bytes read, limit %d", errDrainTooLong, size, limit)
		}
	}
	tail = tail[len(tail)-min(len(tail), edgeBytes):]
	t := &tooBig{size: size, limit: limit}
	t.typ, t.invocation, t.function = sniff(head, tail)
	return typ, nil, t
}

// readAll is io.ReadAll into b (which may already have room).
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

var (
	sniffType       = regexp.MustCompile(`"type"\s*:\s*"([a-z]{1,40})"`)
	sniffInvocation = regexp.MustCompile(`"invocation_id"\s*:\s*"([0-9a-fA-F-]{36})"`)
	sniffFunction   = regexp.MustCompile(`"function_id"\s*:\s*"([^"\\]{1,256})"`)
	sniffBody       = regexp.MustCompile(`"(data|result)"\s*:`)
)

// sniff finds the type, invocation_id and function_id of a message it only
// has the ends of: in the head before the payload ("data" or "result")
// starts, else the last occurrence in the tail (after the payload).
func sniff(head, tail []byte) (typ, invocation, function string) {
	if i := sniffBody.FindIndex(head); i != nil {
		head = head[:i[0]]
	}
	find := func(re *regexp.Regexp) string {
		if m := re.FindSubmatch(head); m != nil {
			return string(m[1])
		}
		all := re.FindAllSubmatch(tail, -1)
		if len(all) > 0 {
			return string(all[len(all)-1][1])
		}
		return ""
	}
	return find(sniffType), find(sniffInvocation), find(sniffFunction)
}

// refuseTooBig answers for an over-limit message so nobody waits for it: a
// call is answered with payload_too_large; a result completes its pending
// call with that error. Anything else is counted and logged.
func (c *conn) refuseTooBig(t *tooBig) {
	e := c.e
	e.drop(DropTooLarge, 1, "worker_id", c.id, "type", t.typ, "function_id", t.function, "bytes", t.size)
	c.log.Warn("worker sent a message over the read limit; discarded", "type", t.typ, "function_id", t.function,
		"invocation_id", t.invocation, "bytes", t.size, "limit", t.limit)
	switch protocol.Type(t.typ) {
	case protocol.TypeInvokeFunction:
		if t.invocation == "" {
			return
		}
		c.send(mustEncode(protocol.InvocationResult{InvocationID: t.invocation, FunctionID: t.function,
			Error: &protocol.ErrorBody{Code: CodePayloadTooLarge, Message: fmt.Sprintf(
				"invokefunction of %s is %d bytes, over the engine's limit of %d bytes (engine.max_frame_bytes); not routed. Use channels for larger payloads",
				t.function, t.size, t.limit)}}))
	case protocol.TypeInvocationResult:
		if p := c.take(t.invocation); p != nil {
			p.complete(failed(CodePayloadTooLarge,
				"the result of %s from worker %s is %d bytes, over the engine's limit of %d bytes (engine.max_frame_bytes)",
				p.functionID, c.id, t.size, t.limit))
		}
	}
}

// sendLimit is the largest message this worker reads: MaxMessageBytes for
// a worker that declared large-messages.v1; none known (0) otherwise,
// where the engine sends what it has, as before.
func (c *conn) sendLimit() int {
	if c.hasFeature(FeatureLargeMessagesV1) {
		return MaxMessageBytes
	}
	return 0
}

// fits reports whether a frame of n bytes may be sent to this worker.
func (c *conn) fits(n int) bool {
	l := c.sendLimit()
	return l == 0 || n <= l
}

// writeMessage writes one text message: a single frame up to
// FragmentThreshold, else fragments of FragmentBytes, each reported as
// progress to the slow-consumer check.
func (c *conn) writeMessage(b []byte) error {
	if len(b) <= fragmentThreshold {
		return c.ws.Write(ioCtx, websocket.MessageText, b)
	}
	w, err := c.ws.Writer(ioCtx, websocket.MessageText)
	if err != nil {
		return err
	}
	for len(b) > 0 {
		n := min(len(b), FragmentBytes)
		if _, err := w.Write(b[:n]); err != nil {
			w.Close()
			return err
		}
		b = b[n:]
		c.writeSince.Store(time.Now().UnixNano())
	}
	return w.Close()
}
