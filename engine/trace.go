package engine

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
)

// spanContext is the part of a W3C traceparent the router needs.
type spanContext struct {
	traceID [16]byte
	spanID  [8]byte
	flags   byte
}

// parseTraceparent reads "00-<32 hex>-<16 hex>-<2 hex>". Anything else,
// and all-zero ids, are invalid (ok false), as the W3C spec says.
func parseTraceparent(s string) (sc spanContext, ok bool) {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || s[:2] == "ff" {
		return sc, false
	}
	if _, err := hex.Decode(sc.traceID[:], []byte(s[3:35])); err != nil {
		return sc, false
	}
	if _, err := hex.Decode(sc.spanID[:], []byte(s[36:52])); err != nil {
		return sc, false
	}
	var f [1]byte
	if _, err := hex.Decode(f[:], []byte(s[53:55])); err != nil {
		return sc, false
	}
	sc.flags = f[0]
	return sc, sc.traceID != [16]byte{} && sc.spanID != [8]byte{}
}

func (sc spanContext) traceparent() string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], sc.traceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], sc.spanID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{sc.flags})
	return string(b[:])
}

func randomID(b []byte) {
	for {
		for i := 0; i < len(b); i += 8 {
			v := rand.Uint64()
			for j := 0; j < 8 && i+j < len(b); j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		for _, x := range b {
			if x != 0 {
				return
			}
		}
	}
}

// childSpan starts the engine's span for one routed call under the
// caller's traceparent, or a new trace when there is none. It returns the
// span's context and the parent span id (zero for a root).
func childSpan(callerTraceparent string) (span spanContext, parent [8]byte) {
	if caller, ok := parseTraceparent(callerTraceparent); ok {
		span.traceID, span.flags, parent = caller.traceID, caller.flags, caller.spanID
	} else {
		randomID(span.traceID[:])
		span.flags = 1 // sampled: the engine records every call
	}
	randomID(span.spanID[:])
	return span, parent
}

// FunctionBaggageKey is the baggage entry naming the function a call
// targets; the engine sets it on every routed call.
const FunctionBaggageKey = "iii.function.id"

// withBaggage returns the W3C baggage header value with key set to value,
// keeping every other entry (and its properties) as it was.
func withBaggage(baggage, key, value string) string {
	entry := key + "=" + escapeBaggage(value)
	if baggage == "" {
		return entry
	}
	var b strings.Builder
	b.Grow(len(baggage) + len(entry) + 1)
	b.WriteString(entry)
	for _, m := range strings.Split(baggage, ",") {
		k, _, _ := strings.Cut(m, "=")
		k = strings.TrimSpace(k)
		if k == "" || k == key {
			continue
		}
		b.WriteByte(',')
		b.WriteString(strings.TrimSpace(m))
	}
	return b.String()
}

// escapeBaggage percent-encodes what a W3C baggage value may not hold
// as is (controls, space, '"', ',', ';', '\\', '%' and non-ASCII).
func escapeBaggage(v string) string {
	ok := func(c byte) bool {
		return c == 0x21 || (c >= 0x23 && c <= 0x2B && c != '%') || (c >= 0x2D && c <= 0x3A) ||
			(c >= 0x3C && c <= 0x5B) || (c >= 0x5D && c <= 0x7E)
	}
	clean := true
	for i := 0; i < len(v); i++ {
		if !ok(v[i]) {
			clean = false
			break
		}
	}
	if clean {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if ok(v[i]) {
			b.WriteByte(v[i])
		} else {
			fmt.Fprintf(&b, "%%%02X", v[i])
		}
	}
	return b.String()
}
