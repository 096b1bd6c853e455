package otlpjson

import (
	"encoding/hex"
	"fmt"
	"math"
	"sort"

	"github.com/iii-workbench/iii/engine/protocol"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// Value converts an OTLP AnyValue to a plain Go value: string, bool,
// int64, float64, []byte (as hex string), []any or map[string]any. A nil
// or empty value is nil. Non-finite doubles become strings (see Float) so
// the result always encodes as JSON.
func Value(v *commonpb.AnyValue) any {
	if v == nil {
		return nil
	}
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return Float(x.DoubleValue)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		if x.ArrayValue == nil {
			return []any{}
		}
		out := make([]any, len(x.ArrayValue.Values))
		for i, e := range x.ArrayValue.Values {
			out[i] = Value(e)
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		if x.KvlistValue == nil {
			return map[string]any{}
		}
		return Attributes(x.KvlistValue.Values)
	}
	return nil
}

// Float returns f, or its name as a string when JSON cannot hold it, as
// the SDK's exporter writes it (protocol.Float).
func Float(f float64) any { return protocol.Float(f) }

// Attributes converts OTLP key-values to a map (a later duplicate key
// wins). It returns nil for none.
func Attributes(kvs []*commonpb.KeyValue) map[string]any {
	if len(kvs) == 0 {
		return nil
	}
	out := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		if kv == nil {
			continue
		}
		out[kv.Key] = Value(kv.Value)
	}
	return out
}

// AnyValue converts a plain Go value (as produced by Value, or decoded
// from JSON) back to an OTLP AnyValue. Unknown types are formatted as
// strings.
func AnyValue(v any) *commonpb.AnyValue {
	switch x := v.(type) {
	case nil:
		return &commonpb.AnyValue{}
	case string:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: x}}
	case bool:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: x}}
	case int:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(x)}}
	case int64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: x}}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(x)}}
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: x}}
	case []any:
		arr := &commonpb.ArrayValue{Values: make([]*commonpb.AnyValue, len(x))}
		for i, e := range x {
			arr.Values[i] = AnyValue(e)
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: arr}}
	case map[string]any:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: KeyValues(x)}}}
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: fmt.Sprint(v)}}
}

// KeyValues converts a map to OTLP key-values, sorted by key.
func KeyValues(m map[string]any) []*commonpb.KeyValue {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*commonpb.KeyValue, len(keys))
	for i, k := range keys {
		out[i] = &commonpb.KeyValue{Key: k, Value: AnyValue(m[k])}
	}
	return out
}
