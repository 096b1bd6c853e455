package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A hand-written JSON scanner for the two messages of every call
// (invokefunction and invocationresult). It walks a frame once, validating
// it as encoding/json would, and yields the byte span of each top-level
// value, so the router reads its routing fields and passes payloads on as
// the sender wrote them instead of decoding and re-encoding them.

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

var errSyntax = errors.New("invalid JSON")

// span is a value's position in a frame: b[start:end].
type span struct{ start, end int }

func (s span) ok() bool { return s.end > s.start }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"',
// and whether it holds an escape or a byte outside printable ASCII (then
// it must go through encoding/json to be read as a Go string).
func skipString(b []byte, i int) (end int, plain bool, err error) {
	i++ // opening quote
	plain = true
	for i < len(b) {
		// Most of a payload is plain ASCII: skip it eight bytes per step
		// while no byte needs a look, then a byte per step.
		for i+8 <= len(b) && !needsLook(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && asciiText[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, plain, nil
		case c == '\\':
			plain = false
			if i+1 >= len(b) {
				return 0, false, errSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, false, errSyntax
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return 0, false, errSyntax
					}
				}
				i += 6
			default:
				return 0, false, errSyntax
			}
		case c < 0x20:
			return 0, false, errSyntax
		default:
			if c >= 0x7f {
				plain = false
			}
			i++
		}
	}
	return 0, false, errSyntax
}

// needsLook reports whether any of the eight bytes in w is one asciiText
// does not pass: a control byte (< 0x20), '"', '\\', DEL or a byte of a
// multi-byte UTF-8 sequence (>= 0x80). It may not say which; the byte
// loop after it does.
func needsLook(w uint64) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	below := (w - ones*0x20) &^ w    // high bit set where a byte is < 0x20 (or >= 0x80, caught anyway)
	quote := w ^ (ones * '"')        // zero where a byte is '"'
	slash := w ^ (ones * '\\')       // zero where a byte is '\\'
	del := w ^ (ones * 0x7f)         // zero where a byte is DEL
	zeros := (quote - ones) &^ quote // high bit set at (at least) the first zero byte
	zeros |= (slash - ones) &^ slash
	zeros |= (del - ones) &^ del
	return (below|zeros|w)&highs != 0
}

// asciiText marks the bytes a JSON string holds as they are and that
// need no further look: printable ASCII other than '"' and '\\'.
var asciiText = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipNumber returns the index after the number starting at b[i].
func skipNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return 0, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, errSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, errSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

// skipValue returns the index after the value starting at b[i] (no
// leading white space). spaced reports insignificant white space inside
// it (the value is not compact).
func skipValue(b []byte, i, depth int) (end int, spaced bool, err error) {
	if i >= len(b) {
		return 0, false, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err = skipString(b, i)
		return end, false, err
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return 0, false, fmt.Errorf("%w: nested too deep", errSyntax)
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		i++
		j := skipSpace(b, i)
		spaced = j != i
		if i = j; i < len(b) && b[i] == closer {
			return i + 1, spaced, nil
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return 0, false, errSyntax
				}
				if i, _, err = skipString(b, i); err != nil {
					return 0, false, err
				}
				j = skipSpace(b, i)
				if j >= len(b) || b[j] != ':' {
					return 0, false, errSyntax
				}
				spaced = spaced || j != i
				i = j + 1
				j = skipSpace(b, i)
				spaced = spaced || j != i
				i = j
			}
			var sp bool
			if i, sp, err = skipValue(b, i, depth+1); err != nil {
				return 0, false, err
			}
			j = skipSpace(b, i)
			spaced = spaced || sp || j != i
			if i = j; i >= len(b) {
				return 0, false, errSyntax
			}
			switch b[i] {
			case ',':
				i++
				j = skipSpace(b, i)
				spaced = spaced || j != i
				i = j
			case closer:
				return i + 1, spaced, nil
			default:
				return 0, false, errSyntax
			}
		}
	case c == '-' || isDigit(c):
		end, err = skipNumber(b, i)
		return end, false, err
	case c == 't':
		end, err = skipLiteral(b, i, "true")
		return end, false, err
	case c == 'f':
		end, err = skipLiteral(b, i, "false")
		return end, false, err
	case c == 'n':
		end, err = skipLiteral(b, i, "null")
		return end, false, err
	}
	return 0, false, errSyntax
}

// checkRaw reports whether raw is exactly one valid JSON value, and
// whether it is compact (no insignificant white space anywhere).
func checkRaw(raw []byte) (compact bool, err error) {
	i := skipSpace(raw, 0)
	lead := i != 0
	end, spaced, err := skipValue(raw, i, 0)
	if err != nil {
		return false, err
	}
	if end != len(raw) {
		if skipSpace(raw, end) != len(raw) {
			return false, errSyntax
		}
		spaced = true
	}
	return !lead && !spaced, nil
}

// eachMember calls fn with the key and value span of every member of the
// object b[i:] (b[i] == '{'), validating it; it returns the index after
// the object. Keys are passed raw, quotes included; spaced reports
// insignificant white space inside the value (it is not compact), and
// valPlain a string value that reads as it is written (see skipString).
func eachMember(b []byte, i int, fn func(key []byte, keyPlain bool, val span, spaced, valPlain bool) error) (int, error) {
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, errSyntax
		}
		kend, plain, err := skipString(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i:kend]
		i = skipSpace(b, kend)
		if i >= len(b) || b[i] != ':' {
			return 0, errSyntax
		}
		i = skipSpace(b, i+1)
		var (
			vend           int
			spaced, vplain bool
		)
		if i < len(b) && b[i] == '"' {
			vend, vplain, err = skipString(b, i)
		} else {
			vend, spaced, err = skipValue(b, i, 1)
		}
		if err != nil {
			return 0, err
		}
		if err := fn(key, plain, span{i, vend}, spaced, vplain); err != nil {
			return 0, err
		}
		i = skipSpace(b, vend)
		if i >= len(b) {
			return 0, errSyntax
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, errSyntax
		}
	}
}
