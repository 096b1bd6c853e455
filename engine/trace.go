package engine

import (
	"encoding/hex"
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
	return string(sc.appendTraceparent(b[:0]))
}

// appendTraceparent appends the span's traceparent (55 bytes) to b.
func (sc spanContext) appendTraceparent(b []byte) []byte {
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, sc.traceID[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sc.spanID[:])
	b = append(b, '-')
	return hex.AppendEncode(b, []byte{sc.flags})
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
	return string(appendBaggage(nil, baggage, key, value))
}

// appendBaggage appends withBaggage(baggage, key, value) to b.
func appendBaggage(b []byte, baggage, key, value string) []byte {
	b = append(b, key...)
	b = append(b, '=')
	b = appendBaggageValue(b, value)
	for rest := baggage; rest != ""; {
		var m string
		m, rest, _ = strings.Cut(rest, ",")
		k, _, _ := strings.Cut(m, "=")
		k = strings.TrimSpace(k)
		if k == "" || k == key {
			continue
		}
		b = append(b, ',')
		b = append(b, strings.TrimSpace(m)...)
	}
	return b
}

// appendBaggageValue appends v percent-encoded where a W3C baggage value
// may not hold it as is (controls, space, '"', ',', ';', '\\', '%' and
// non-ASCII).
func appendBaggageValue(b []byte, v string) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		if c := v[i]; baggageOctet(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		}
	}
	return b
}

// baggageOctet reports whether c may stand as it is in a baggage value.
func baggageOctet(c byte) bool {
	return c == 0x21 || (c >= 0x23 && c <= 0x2B && c != '%') || (c >= 0x2D && c <= 0x3A) ||
		(c >= 0x3C && c <= 0x5B) || (c >= 0x5D && c <= 0x7E)
}
