package protocol

import (
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestFloat: doubles JSON cannot hold are named as the protobuf JSON
// mapping (and so OTLP/JSON) names them, and protojson reads them back.
func TestFloat(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want any
	}{
		{1.5, 1.5},
		{math.NaN(), "NaN"},
		{math.Inf(1), "Infinity"},
		{math.Inf(-1), "-Infinity"},
	} {
		got := Float(tt.in)
		if got != tt.want {
			t.Errorf("Float(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if s, ok := got.(string); ok {
			var d wrapperspb.DoubleValue
			if err := protojson.Unmarshal([]byte(`"`+s+`"`), &d); err != nil {
				t.Errorf("protojson cannot read %q as a double: %v", s, err)
			}
		}
	}
}
