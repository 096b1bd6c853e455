// Package otlpjson decodes the OTLP/JSON telemetry that iii workers send in
// binary OTLP / MTRC / LOGS frames into the OTLP protobuf types, and
// converts OTLP attribute values to and from plain Go values.
//
// OTLP/JSON differs from protobuf's canonical JSON mapping in one way that
// matters here: trace and span ids are hex strings, where protojson expects
// base64 for bytes fields. Decode rewrites the id fields (traceId, spanId,
// parentSpanId, in camelCase or snake_case, wherever they appear: spans,
// links, log records, exemplars) from hex to base64 before handing the
// document to protojson. 64-bit integers may be JSON numbers or strings;
// protojson accepts both. Unknown fields are ignored.
package otlpjson

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// ErrMalformed is returned for a payload that is not an OTLP/JSON document
// of the expected kind.
var ErrMalformed = errors.New("otlpjson: malformed payload")

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// DecodeTraces decodes an OTLP/JSON ExportTraceServiceRequest.
func DecodeTraces(data []byte) (*coltracepb.ExportTraceServiceRequest, error) {
	req := &coltracepb.ExportTraceServiceRequest{}
	return req, decode(data, req)
}

// DecodeMetrics decodes an OTLP/JSON ExportMetricsServiceRequest.
func DecodeMetrics(data []byte) (*colmetricspb.ExportMetricsServiceRequest, error) {
	req := &colmetricspb.ExportMetricsServiceRequest{}
	return req, decode(data, req)
}

// DecodeLogs decodes an OTLP/JSON ExportLogsServiceRequest.
func DecodeLogs(data []byte) (*collogspb.ExportLogsServiceRequest, error) {
	req := &collogspb.ExportLogsServiceRequest{}
	return req, decode(data, req)
}

func decode(data []byte, into proto.Message) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: invalid UTF-8", ErrMalformed)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep 64-bit integers exact
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON document", ErrMalformed)
	}
	if hexIDsToBase64(doc) {
		var err error
		if data, err = json.Marshal(doc); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	if err := unmarshal.Unmarshal(data, into); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// idKeys are the bytes fields OTLP/JSON writes as hex.
var idKeys = map[string]bool{
	"traceId": true, "spanId": true, "parentSpanId": true,
	"trace_id": true, "span_id": true, "parent_span_id": true,
}

// hexIDsToBase64 rewrites, in place, every id field holding a hex string
// as base64, and reports whether it changed anything. A value that is not
// hex is left for protojson to judge.
func hexIDsToBase64(v any) bool {
	changed := false
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && idKeys[k] {
				if b, ok := decodeHex(s); ok {
					x[k] = base64.StdEncoding.EncodeToString(b)
					changed = true
				}
				continue
			}
			if hexIDsToBase64(val) {
				changed = true
			}
		}
	case []any:
		for _, e := range x {
			if hexIDsToBase64(e) {
				changed = true
			}
		}
	}
	return changed
}

func decodeHex(s string) ([]byte, bool) {
	if s == "" || len(s)%2 != 0 {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	return b, err == nil
}
