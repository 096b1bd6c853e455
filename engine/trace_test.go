package engine

import "testing"

func TestParseTraceparent(t *testing.T) {
	cases := []struct {
		in string
		ok bool
	}{
		{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", true},
		{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", true},
		{"00-00000000000000000000000000000000-b7ad6b7169203331-01", false},
		{"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", false},
		{"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", false},
		{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01", false},
		{"00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", false},
		{"", false},
	}
	for _, c := range cases {
		sc, ok := parseTraceparent(c.in)
		if ok != c.ok {
			t.Errorf("parseTraceparent(%q) ok=%v, want %v", c.in, ok, c.ok)
		}
		if ok && sc.traceparent() != c.in {
			t.Errorf("round trip of %q gave %q", c.in, sc.traceparent())
		}
	}
}

func TestChildSpan(t *testing.T) {
	caller := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	span, parent := childSpan(caller)
	tp := span.traceparent()
	if tp[3:35] != caller[3:35] {
		t.Errorf("child %s lost the caller's trace id", tp)
	}
	if tp[36:52] == caller[36:52] {
		t.Errorf("child %s reuses the caller's span id", tp)
	}
	if got := span.traceparent(); got[53:] != "01" {
		t.Errorf("flags %s, want the caller's 01", got[53:])
	}
	if parent != [8]byte{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31} {
		t.Errorf("parent %x", parent)
	}
	root, none := childSpan("garbage")
	if _, ok := parseTraceparent(root.traceparent()); !ok || none != [8]byte{} {
		t.Errorf("root span %s parent %x", root.traceparent(), none)
	}
}

func TestWithBaggage(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "iii.function.id=orders::create"},
		{"user=42", "iii.function.id=orders::create,user=42"},
		{"iii.function.id=old, user=42;prop=1 ,tenant=a", "iii.function.id=orders::create,user=42;prop=1,tenant=a"},
	}
	for _, c := range cases {
		if got := withBaggage(c.in, FunctionBaggageKey, "orders::create"); got != c.want {
			t.Errorf("withBaggage(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := withBaggage("", "k", "a,b c%"); got != "k=a%2Cb%20c%25" {
		t.Errorf("escaping: got %q", got)
	}
}
