package protocol

import (
	"encoding/json"
	"fmt"
)

// Message types of the 0.25 SDK generation: registration rejection and the
// observe family. The engine sends the engine-to-worker observe messages
// only to a connection that declared FeatureObserveV1.
const (
	TypeRegistrationRejected Type = "registrationrejected"
	TypeObserve              Type = "observe"
	TypeUnobserve            Type = "unobserve"
	TypeObserveResult        Type = "observeresult"
	TypeObserverStateChanged Type = "observerstatechanged"
	TypeFunctionRegistered   Type = "functionregistered"
	TypeObserverAdded        Type = "observeradded"
	TypeObserverRemoved      Type = "observerremoved"
	TypeObserverAck          Type = "observerack"
	TypeInvocationsObserved  Type = "invocationsobserved"
	TypeLocalInvocationStats Type = "localinvocationstats"
)

// Feature tokens of workerregistered.features and of the features a worker
// declares in its engine::workers::register payload.
const (
	FeatureObserveV1       = "observe.v1"
	FeatureObserveV2       = "observe.v2" // includes observe.v1
	FeatureLocalDispatchV1 = "local-dispatch.v1"
	FeatureLargeMessagesV1 = "large-messages.v1"
)

// DefaultNamespace is what an absent namespace means.
const DefaultNamespace = "default"

// Observer states (observeresult.state, observerstatechanged.state).
const (
	ObserverPending   = "pending"
	ObserverActive    = "active"
	ObserverSuspended = "suspended"
	ObserverError     = "error"
	ObserverDisposed  = "disposed"
)

// Values of observe.source.capture, .on and .deliver.
const (
	CaptureInput    = "input"
	CaptureOutput   = "output"
	CaptureError    = "error"
	CaptureCaller   = "caller"
	CaptureMetadata = "metadata"

	OnSuccess  = "success"
	OnError    = "error"
	OnComplete = "complete"

	DeliverEnvelope = "envelope"
	DeliverInput    = "input"
	DeliverOutput   = "output"
)

// DefaultCapture is what an absent observe.source.capture means.
var DefaultCapture = []string{CaptureInput, CaptureOutput, CaptureCaller}

// Observe error and state-reason codes, as the SDKs expect them.
const (
	CodeUnsupported          = "UNSUPPORTED"
	CodeInvalidArgs          = "INVALID_ARGS"
	CodeInvalidArgsFormat    = "INVALID_ARGS_FORMAT"
	CodeInvalidFilter        = "INVALID_FILTER"
	CodeInvalidFilterPath    = "INVALID_FILTER_PATH"
	CodeNotObservable        = "NOT_OBSERVABLE"
	CodeForbidden            = "FORBIDDEN"
	CodeSelfTarget           = "SELF_TARGET"
	CodeLimitExceeded        = "LIMIT_EXCEEDED"
	CodeObserverIDConflict   = "OBSERVER_ID_CONFLICT"
	CodeOwnerTimeout         = "OWNER_TIMEOUT"
	CodeObserveRejected      = "OBSERVE_REJECTED"
	CodeObserverNotFound     = "OBSERVER_NOT_FOUND"
	CodeNotFunctionOwner     = "NOT_FUNCTION_OWNER"
	CodeObserverNotActive    = "OBSERVER_NOT_ACTIVE"
	CodeOverflow             = "OVERFLOW"
	CodeLoopGuard            = "LOOP_GUARD"
	CodeOwnerUnavailable     = "OWNER_UNAVAILABLE"
	CodeTargetUnavailable    = "TARGET_UNAVAILABLE"
	CodeObserverDisconnected = "OBSERVER_DISCONNECTED"
	CodeExpired              = "EXPIRED"
	CodeMaxFires             = "MAX_FIRES"
	CodeUnobserved           = "UNOBSERVED"
)

// registrationrejected codes.
const (
	CodeWorkerNamespaceConflict   = "WORKER_NAMESPACE_CONFLICT"
	CodeFunctionNamespaceConflict = "FUNCTION_NAMESPACE_CONFLICT"
)

// CodeInvalidNamespace refuses a registertrigger whose namespace or
// trigger_namespace is named and blank (iii's code).
const CodeInvalidNamespace = "INVALID_NAMESPACE"

// RegistrationRejected refuses a worker name (fatal: the engine closes the
// connection) or one function registration (FunctionID set).
type RegistrationRejected struct {
	Code          string `json:"code"`
	Namespace     string `json:"namespace"`
	WorkerName    string `json:"worker_name,omitempty"`
	FunctionID    string `json:"function_id,omitempty"`
	OwnerWorkerID string `json:"owner_worker_id"`
}

// ObserveSource is the left side of an observe: the observed function and
// what of its calls activates and reaches the target. Empty fields are
// absent on the wire; the engine applies the defaults. A nil Capture is
// absent, a non-nil empty one captures nothing.
type ObserveSource struct {
	FunctionID string          `json:"function_id"`
	Namespace  string          `json:"namespace,omitempty"`
	Args       json.RawMessage `json:"args,omitempty"`
	Filters    json.RawMessage `json:"filters,omitempty"`
	Capture    []string        `json:"capture,omitempty"`
	On         string          `json:"on,omitempty"`
	Deliver    string          `json:"deliver,omitempty"`
}

// MarshalJSON leaves absent fields out and keeps an empty capture apart
// from an absent one.
func (s ObserveSource) MarshalJSON() ([]byte, error) {
	type plain ObserveSource
	v := struct {
		plain
		Capture *[]string `json:"capture,omitempty"`
	}{plain: plain(s)}
	if s.Capture != nil {
		v.Capture = &s.Capture
	}
	return json.Marshal(v)
}

// FunctionRef names a registered function (observe.target).
type FunctionRef struct {
	FunctionID string `json:"function_id"`
	Namespace  string `json:"namespace,omitempty"`
}

// Observe creates, or idempotently replays, an observer owned by the
// sending connection. ID is the client's UUID, stable across replays.
type Observe struct {
	ID          string          `json:"id"`
	Source      ObserveSource   `json:"source"`
	Target      FunctionRef     `json:"target"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	MaxFires    *uint64         `json:"max_fires,omitempty"`
	ExpiresInMS *uint64         `json:"expires_in_ms,omitempty"`
	MaxInFlight *uint32         `json:"max_in_flight,omitempty"`
}

// Unobserve disposes an observer the sending connection owns.
type Unobserve struct {
	ID string `json:"id"`
}

// ObserveResult answers every observe, replays included.
type ObserveResult struct {
	ID       string     `json:"id"`
	State    string     `json:"state"`
	Error    *ErrorBody `json:"error,omitempty"`
	Warnings []string   `json:"warnings,omitempty"`
}

// ObserverStateChanged reports a lifecycle transition to the observing worker.
type ObserverStateChanged struct {
	ID     string     `json:"id"`
	State  string     `json:"state"`
	Reason *ErrorBody `json:"reason,omitempty"`
	Fires  uint64     `json:"fires"`
}

// LegacyTrigger is the old trigger an observer of the Python legacy shim
// came from (observer view, Python only).
type LegacyTrigger struct {
	TriggerType string          `json:"trigger_type"`
	Config      json.RawMessage `json:"config"`
}

// ObserverView is an observer as its function's host sees it: never its
// metadata, policy or observing worker. Args and Filters are always sent
// ({} when none); Capture always, possibly empty.
type ObserverView struct {
	ID      string          `json:"id"`
	Args    json.RawMessage `json:"args"`
	Filters json.RawMessage `json:"filters"`
	Target  string          `json:"target"`
	Capture []string        `json:"capture"`
	On      string          `json:"on"`
	Legacy  *LegacyTrigger  `json:"legacy,omitempty"`
}

// FunctionRegistered acknowledges a registerfunction to its host, with the
// full current observer set.
type FunctionRegistered struct {
	ID            string         `json:"id"`
	Namespace     string         `json:"namespace"`
	Revision      uint64         `json:"revision"`
	LocalDispatch bool           `json:"local_dispatch"`
	Observers     []ObserverView `json:"observers"`
}

// ObserverAdded tells a host one observer attached to its function; the
// host answers with ObserverAck.
type ObserverAdded struct {
	FunctionID string       `json:"function_id"`
	Namespace  string       `json:"namespace"`
	Revision   uint64       `json:"revision"`
	Observer   ObserverView `json:"observer"`
}

// ObserverRemoved tells a host one observer detached.
type ObserverRemoved struct {
	FunctionID string `json:"function_id"`
	Namespace  string `json:"namespace"`
	Revision   uint64 `json:"revision"`
	ID         string `json:"id"`
}

// ObserverAck accepts an added observer or, with Error, rejects it (also
// later, for an active observer).
type ObserverAck struct {
	FunctionID string     `json:"function_id"`
	Namespace  string     `json:"namespace,omitempty"`
	ID         string     `json:"id"`
	Revision   uint64     `json:"revision"`
	Error      *ErrorBody `json:"error,omitempty"`
}

// ObservedItem is one local call that matched observers, or one owner emit
// (Python). Input, Output, Error and Metadata keep a present null (the
// bytes "null") apart from absent (nil). Error is any JSON value.
type ObservedItem struct {
	FunctionID    string          `json:"function_id"`
	Namespace     string          `json:"namespace,omitempty"`
	InvocationID  string          `json:"invocation_id"`
	Matched       []string        `json:"matched"`
	Status        string          `json:"status"`
	Input         json.RawMessage `json:"input,omitempty"`
	Output        json.RawMessage `json:"output,omitempty"`
	Error         json.RawMessage `json:"error,omitempty"`
	Caller        json.RawMessage `json:"caller,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	StartedAtMS   uint64          `json:"started_at_ms"`
	DurationMS    float64         `json:"duration_ms"`
	ObserveDepth  uint32          `json:"observe_depth"`
	Traceparent   string          `json:"traceparent,omitempty"`
	Baggage       string          `json:"baggage,omitempty"`
	OutputIsInput bool            `json:"output_is_input,omitempty"`
}

// InvocationsObserved batches the observed local calls of a host.
type InvocationsObserved struct {
	Items []ObservedItem `json:"items"`
}

// LocalFunctionStats counts one function's local calls in a window.
type LocalFunctionStats struct {
	FunctionID    string  `json:"function_id"`
	Count         uint64  `json:"count"`
	Errors        uint64  `json:"errors"`
	DurationMSSum float64 `json:"duration_ms_sum"`
}

// DroppedReportStats counts reports a host dropped (BUFFER_FULL, TOO_LARGE,
// INACTIVE).
type DroppedReportStats struct {
	FunctionID string `json:"function_id"`
	Reason     string `json:"reason"`
	Count      uint64 `json:"count"`
}

// LocalInvocationStats reports a host's local calls, every 10 s when non-zero.
type LocalInvocationStats struct {
	WindowMS       uint64               `json:"window_ms"`
	Functions      []LocalFunctionStats `json:"functions"`
	DroppedReports []DroppedReportStats `json:"dropped_reports"`
}

// Activation is invokefunction.activation: engine to worker on every
// observer activation; worker to engine (ObserverID only) on a call through
// an observer.
type Activation struct {
	ObserverID   string `json:"observer_id"`
	ActivationID string `json:"activation_id,omitempty"`
}

// ObserveDescriptor is registerfunction.observe (Python): how the
// function's observers are delivered. Allow false refuses every observer
// (NOT_OBSERVABLE).
type ObserveDescriptor struct {
	Delivery          string          `json:"delivery,omitempty"` // "auto" or "owner"
	ArgsFormat        json.RawMessage `json:"args_format,omitempty"`
	LegacyTriggerType string          `json:"legacy_trigger_type,omitempty"`
	Allow             *bool           `json:"allow,omitempty"`
}

// Delivery values of ObserveDescriptor.
const (
	DeliveryAuto  = "auto"
	DeliveryOwner = "owner"
)

func (RegistrationRejected) MessageType() Type { return TypeRegistrationRejected }
func (Observe) MessageType() Type              { return TypeObserve }
func (Unobserve) MessageType() Type            { return TypeUnobserve }
func (ObserveResult) MessageType() Type        { return TypeObserveResult }
func (ObserverStateChanged) MessageType() Type { return TypeObserverStateChanged }
func (FunctionRegistered) MessageType() Type   { return TypeFunctionRegistered }
func (ObserverAdded) MessageType() Type        { return TypeObserverAdded }
func (ObserverRemoved) MessageType() Type      { return TypeObserverRemoved }
func (ObserverAck) MessageType() Type          { return TypeObserverAck }
func (InvocationsObserved) MessageType() Type  { return TypeInvocationsObserved }
func (LocalInvocationStats) MessageType() Type { return TypeLocalInvocationStats }

// observeMessages lists the 0.25 message types for fieldsByType.
var observeMessages = []Message{
	RegistrationRejected{}, Observe{}, Unobserve{}, ObserveResult{}, ObserverStateChanged{},
	FunctionRegistered{}, ObserverAdded{}, ObserverRemoved{}, ObserverAck{},
	InvocationsObserved{}, LocalInvocationStats{},
}

// wireObserve holds the top-level fields of the 0.25 messages and of the
// new fields of the older ones; it is embedded in wire.
type wireObserve struct {
	Code           *string              `json:"code"`
	Namespace      *string              `json:"namespace"`
	WorkerName     *string              `json:"worker_name"`
	OwnerWorkerID  *string              `json:"owner_worker_id"`
	Source         *wireSource          `json:"source"`
	Target         *wireFunctionRef     `json:"target"`
	MaxFires       *uint64              `json:"max_fires"`
	ExpiresInMS    *uint64              `json:"expires_in_ms"`
	MaxInFlight    *uint32              `json:"max_in_flight"`
	State          *string              `json:"state"`
	Warnings       []string             `json:"warnings"`
	Reason         *wireError           `json:"reason"`
	Fires          *uint64              `json:"fires"`
	Revision       *uint64              `json:"revision"`
	LocalDispatch  *bool                `json:"local_dispatch"`
	Observers      []ObserverView       `json:"observers"`
	Observer       *ObserverView        `json:"observer"`
	Items          []ObservedItem       `json:"items"`
	WindowMS       *uint64              `json:"window_ms"`
	Functions      []LocalFunctionStats `json:"functions"`
	DroppedReports []DroppedReportStats `json:"dropped_reports"`

	// New fields of invokefunction, invocationresult and registerfunction.
	ObserveDepth *uint32            `json:"observe_depth"`
	Activation   *wireActivation    `json:"activation"`
	Matched      *[]string          `json:"matched"`
	Delivered    *bool              `json:"delivered"`
	Observe      *ObserveDescriptor `json:"observe"`
	ArgsFormat   json.RawMessage    `json:"args_format"`
	Private      *bool              `json:"private"`
	Observable   *bool              `json:"observable"`
}

type wireSource struct {
	FunctionID *string         `json:"function_id"`
	Namespace  *string         `json:"namespace"`
	Args       json.RawMessage `json:"args"`
	Filters    json.RawMessage `json:"filters"`
	Capture    *[]string       `json:"capture"`
	On         *string         `json:"on"`
	Deliver    *string         `json:"deliver"`
}

type wireFunctionRef struct {
	FunctionID *string `json:"function_id"`
	Namespace  *string `json:"namespace"`
}

type wireActivation struct {
	ObserverID   *string `json:"observer_id"`
	ActivationID *string `json:"activation_id"`
}

func (w *wire) reason(t Type) (*ErrorBody, error) {
	if w.Reason == nil {
		return nil, nil
	}
	if w.Reason.Code == nil {
		return nil, missing(t, "reason.code")
	}
	return &ErrorBody{Code: *w.Reason.Code, Message: str(w.Reason.Message), Stacktrace: str(w.Reason.Stacktrace)}, nil
}

func (w *wire) activation(t Type) (*Activation, error) {
	if w.Activation == nil {
		return nil, nil
	}
	// An empty id names no observer: refused as the fast path
	// (decodeCall) refuses it.
	if w.Activation.ObserverID == nil || *w.Activation.ObserverID == "" {
		return nil, missing(t, "activation.observer_id")
	}
	return &Activation{ObserverID: *w.Activation.ObserverID, ActivationID: str(w.Activation.ActivationID)}, nil
}

// observeFields fills the 0.25 fields of the three older messages that
// carry them.
func (w *wire) observeFields(m Message) (Message, error) {
	switch m := m.(type) {
	case InvokeFunction:
		a, err := w.activation(TypeInvokeFunction)
		if err != nil {
			return nil, err
		}
		m.Activation = a
		if w.ObserveDepth != nil {
			m.ObserveDepth = *w.ObserveDepth
		}
		return m, nil
	case InvocationResult:
		if w.Matched != nil {
			m.Matched = *w.Matched
			if m.Matched == nil {
				m.Matched = []string{}
			}
		}
		m.Delivered = w.Delivered != nil && *w.Delivered
		return m, nil
	case RegisterFunction:
		if w.Observe != nil {
			d := *w.Observe
			d.ArgsFormat = rawOrNil(d.ArgsFormat)
			if d.Delivery != "" || d.ArgsFormat != nil || d.LegacyTriggerType != "" || d.Allow != nil {
				m.Observe = &d // an empty descriptor is no descriptor
			}
		}
		m.ArgsFormat = rawOrNil(w.ArgsFormat)
		m.Private = w.Private != nil && *w.Private
		if w.Observable != nil && !*w.Observable {
			f := false
			m.Observable = &f
		}
		return m, nil
	}
	return m, nil
}

// narrowObserve narrows the 0.25 message types; ok is false for any other.
func (w *wire) narrowObserve(t Type) (m Message, ok bool, err error) {
	switch t {
	case TypeRegistrationRejected:
		if w.Code == nil {
			return nil, true, missing(t, "code")
		}
		ns := str(w.Namespace)
		if ns == "" {
			ns = DefaultNamespace
		}
		return RegistrationRejected{
			Code: *w.Code, Namespace: ns, WorkerName: str(w.WorkerName),
			FunctionID: str(w.FunctionID), OwnerWorkerID: str(w.OwnerWorkerID),
		}, true, nil
	case TypeObserve:
		switch {
		case w.ID == nil:
			return nil, true, missing(t, "id")
		case w.Source == nil || w.Source.FunctionID == nil:
			return nil, true, missing(t, "source.function_id")
		case w.Target == nil || w.Target.FunctionID == nil:
			return nil, true, missing(t, "target.function_id")
		}
		src := ObserveSource{
			FunctionID: *w.Source.FunctionID, Namespace: str(w.Source.Namespace),
			Args: rawOrNil(w.Source.Args), Filters: rawOrNil(w.Source.Filters),
			On: str(w.Source.On), Deliver: str(w.Source.Deliver),
		}
		if w.Source.Capture != nil { // "capture": null leaves the pointer nil: absent
			src.Capture = *w.Source.Capture
		}
		return Observe{
			ID: *w.ID, Source: src,
			Target:   FunctionRef{FunctionID: *w.Target.FunctionID, Namespace: str(w.Target.Namespace)},
			Metadata: rawOrNil(w.Metadata), MaxFires: w.MaxFires, ExpiresInMS: w.ExpiresInMS, MaxInFlight: w.MaxInFlight,
		}, true, nil
	case TypeUnobserve:
		if w.ID == nil {
			return nil, true, missing(t, "id")
		}
		return Unobserve{ID: *w.ID}, true, nil
	case TypeObserveResult:
		switch {
		case w.ID == nil:
			return nil, true, missing(t, "id")
		case w.State == nil:
			return nil, true, missing(t, "state")
		}
		eb, err := w.errorBody(t)
		if err != nil {
			return nil, true, err
		}
		var warnings []string
		if len(w.Warnings) > 0 {
			warnings = w.Warnings
		}
		return ObserveResult{ID: *w.ID, State: *w.State, Error: eb, Warnings: warnings}, true, nil
	case TypeObserverStateChanged:
		switch {
		case w.ID == nil:
			return nil, true, missing(t, "id")
		case w.State == nil:
			return nil, true, missing(t, "state")
		}
		r, err := w.reason(t)
		if err != nil {
			return nil, true, err
		}
		var fires uint64
		if w.Fires != nil {
			fires = *w.Fires
		}
		return ObserverStateChanged{ID: *w.ID, State: *w.State, Reason: r, Fires: fires}, true, nil
	case TypeFunctionRegistered:
		if w.ID == nil {
			return nil, true, missing(t, "id")
		}
		obs := make([]ObserverView, 0, len(w.Observers))
		for _, o := range w.Observers {
			obs = append(obs, o.normal())
		}
		return FunctionRegistered{
			ID: *w.ID, Namespace: nsOrDefault(w.Namespace), Revision: u64(w.Revision),
			LocalDispatch: w.LocalDispatch != nil && *w.LocalDispatch, Observers: obs,
		}, true, nil
	case TypeObserverAdded:
		switch {
		case w.FunctionID == nil:
			return nil, true, missing(t, "function_id")
		case w.Observer == nil:
			return nil, true, missing(t, "observer")
		}
		return ObserverAdded{
			FunctionID: *w.FunctionID, Namespace: nsOrDefault(w.Namespace),
			Revision: u64(w.Revision), Observer: w.Observer.normal(),
		}, true, nil
	case TypeObserverRemoved:
		switch {
		case w.FunctionID == nil:
			return nil, true, missing(t, "function_id")
		case w.ID == nil:
			return nil, true, missing(t, "id")
		}
		return ObserverRemoved{FunctionID: *w.FunctionID, Namespace: nsOrDefault(w.Namespace), Revision: u64(w.Revision), ID: *w.ID}, true, nil
	case TypeObserverAck:
		switch {
		case w.FunctionID == nil:
			return nil, true, missing(t, "function_id")
		case w.ID == nil:
			return nil, true, missing(t, "id")
		case w.Revision == nil:
			return nil, true, missing(t, "revision")
		}
		eb, err := w.errorBody(t)
		if err != nil {
			return nil, true, err
		}
		return ObserverAck{FunctionID: *w.FunctionID, Namespace: str(w.Namespace), ID: *w.ID, Revision: *w.Revision, Error: eb}, true, nil
	case TypeInvocationsObserved:
		items := make([]ObservedItem, 0, len(w.Items))
		for i, it := range w.Items {
			if it.FunctionID == "" || it.InvocationID == "" {
				return nil, true, fmt.Errorf("%w: %s: items[%d]: missing function_id or invocation_id", ErrProtocolMalformed, t, i)
			}
			if it.Matched == nil {
				it.Matched = []string{}
			}
			if it.Status == "" {
				it.Status = "success"
			}
			items = append(items, it)
		}
		return InvocationsObserved{Items: items}, true, nil
	case TypeLocalInvocationStats:
		fs, ds := w.Functions, w.DroppedReports
		if fs == nil {
			fs = []LocalFunctionStats{}
		}
		if ds == nil {
			ds = []DroppedReportStats{}
		}
		return LocalInvocationStats{WindowMS: u64(w.WindowMS), Functions: fs, DroppedReports: ds}, true, nil
	}
	return nil, false, nil
}

// normal applies the view's defaults to what was decoded: absent or null
// args and filters are {}, absent capture the default, absent on success.
func (v ObserverView) normal() ObserverView {
	if len(v.Args) == 0 || string(v.Args) == "null" {
		v.Args = json.RawMessage("{}")
	}
	if len(v.Filters) == 0 || string(v.Filters) == "null" {
		v.Filters = json.RawMessage("{}")
	}
	if v.Capture == nil {
		v.Capture = append([]string(nil), DefaultCapture...)
	}
	if v.On == "" {
		v.On = OnSuccess
	}
	if v.Legacy != nil && len(v.Legacy.Config) == 0 {
		v.Legacy.Config = json.RawMessage("null")
	}
	return v
}

func nsOrDefault(p *string) string {
	if p == nil || *p == "" {
		return DefaultNamespace
	}
	return *p
}

func u64(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
