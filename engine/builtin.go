package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/iii-workbench/iii/engine/channel"
	"github.com/iii-workbench/iii/engine/protocol"
)

// BuiltinWorker is the in-process worker that serves the engine::*
// introspection functions.
const BuiltinWorker = "iii-engine-functions"

// Built-in trigger types fired by the engine itself.
const (
	TriggerWorkersAvailable   = "engine::workers-available"
	TriggerFunctionsAvailable = "engine::functions-available"
)

// functionsDebounce coalesces bursts of (un)registrations into one
// functions-available firing.
const functionsDebounce = 100 * time.Millisecond

// idArg reads the {"id": ...} input of the *::info and unregister
// built-ins; the id is required.
func idArg(call *Call) (string, error) {
	var in struct {
		ID string `json:"id"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return "", err
	}
	if in.ID == "" {
		return "", badArgs("id is required")
	}
	return in.ID, nil
}

func badArgs(format string, args ...any) error {
	return &protocol.ErrorBody{Code: CodeInvalidArguments, Message: fmt.Sprintf(format, args...)}
}

// decodeArgs strictly reads a built-in's input object.
func decodeArgs(data json.RawMessage, v any) error {
	if len(data) == 0 || string(data) == "null" {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return &protocol.ErrorBody{Code: CodeDeserialization, Message: "invalid input: " + err.Error()}
	}
	return nil
}

func marshal(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &protocol.ErrorBody{Code: "serialization_error", Message: err.Error()}
	}
	return b, nil
}

// noop is the provider of the engine's own trigger types: bindings are
// stored by the engine and fired with Fire, so there is nothing to set up.
type noop struct{}

func (noop) RegisterTrigger(context.Context, Trigger) error   { return nil }
func (noop) UnregisterTrigger(context.Context, Trigger) error { return nil }

func (e *Engine) registerBuiltins() error {
	fns := []Function{
		{ID: "engine::workers::register", Description: "Record the calling worker's metadata", Handler: e.fnWorkersRegister},
		{ID: "engine::workers::list", Description: "List connected workers", Handler: e.fnWorkersList},
		{ID: "engine::workers::info", Description: "Describe one worker", Handler: e.fnWorkersInfo},
		{ID: "engine::functions::list", Description: "List registered functions", Handler: e.fnFunctionsList},
		{ID: "engine::functions::info", Description: "Describe one or more functions", Handler: e.fnFunctionsInfo},
		{ID: "engine::triggers::list", Description: "List trigger types", Handler: e.fnTriggersList},
		{ID: "engine::triggers::info", Description: "Describe one trigger type", Handler: e.fnTriggersInfo},
		{ID: "engine::registered-triggers::list", Description: "List trigger bindings", Handler: e.fnRegisteredTriggersList},
		{ID: "engine::registered-triggers::info", Description: "Describe one trigger binding", Handler: e.fnRegisteredTriggersInfo},
		{ID: "engine::register_trigger", Description: "Create an ownerless trigger binding", Handler: e.fnRegisterTrigger},
		{ID: "engine::unregister_trigger", Description: "Remove a trigger binding", Handler: e.fnUnregisterTrigger},
		{ID: "engine::channels::create", Description: "Create a streaming channel pair", Handler: e.fnChannelsCreate},
	}
	for _, f := range fns {
		if err := e.RegisterFunction(BuiltinWorker, f); err != nil {
			return err
		}
	}
	e.mu.Lock()
	e.localWorker(BuiltinWorker).description = "engine introspection functions"
	e.mu.Unlock()
	for _, t := range []TriggerType{
		{ID: TriggerWorkersAvailable, Description: "Fires when a worker connects, disconnects or updates its metadata", Provider: noop{}},
		{ID: TriggerFunctionsAvailable, Description: "Fires when the set of registered functions changes", Provider: noop{}},
	} {
		if err := e.RegisterTriggerType(BuiltinWorker, t); err != nil {
			return err
		}
	}
	return e.installEngineSources() // sources.go
}

func (e *Engine) fireWorkersAvailable(ev, workerID string) {
	payload, _ := json.Marshal(map[string]string{"event": ev, "worker_id": workerID})
	e.Fire(TriggerWorkersAvailable, payload)
}

func (e *Engine) notifyFunctionsChanged() {
	select {
	case e.funcsChanged <- struct{}{}:
	default:
	}
}

// functionsAvailableLoop fires engine::functions-available once per burst
// of function changes. It exits when the engine shuts down.
func (e *Engine) functionsAvailableLoop() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.funcsChanged:
			timer.Reset(functionsDebounce)
		case <-timer.C:
			if len(e.Bindings(TriggerFunctionsAvailable)) == 0 {
				continue
			}
			out, err := e.listFunctions(functionsListArgs{})
			if err != nil {
				continue
			}
			payload, _ := json.Marshal(map[string]any{"event": "functions_changed", "functions": out.Functions})
			e.Fire(TriggerFunctionsAvailable, payload)
		}
	}
}

// cleanText strips control and bidi characters and cuts to 280 runes.
func cleanText(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			continue
		}
		if n == 280 {
			break
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

func (e *Engine) fnWorkersRegister(_ context.Context, call *Call) (json.RawMessage, error) {
	if call.declared {
		return json.RawMessage(`{"success":true}`), nil // applied on the worker's reader (registerWorker)
	}
	var in struct {
		CallerID string `json:"_caller_worker_id"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	id := call.CallerWorkerID
	if id == "" {
		id = in.CallerID
	}
	e.mu.RLock()
	c := e.conns[id]
	e.mu.RUnlock()
	if c == nil {
		return nil, &protocol.ErrorBody{Code: CodeNotFound, Message: "engine::workers::register must be called by a connected worker"}
	}
	if err := e.registerWorker(c, call.Data); err != nil {
		return nil, err
	}
	return json.RawMessage(`{"success":true}`), nil
}

// workerSummary is the wire shape of a worker (nullable strings as null).
type workerSummary struct {
	Name              string   `json:"name"`
	Namespace         string   `json:"namespace"`
	Description       *string  `json:"description"`
	Version           *string  `json:"version"`
	ID                string   `json:"id"`
	Runtime           *string  `json:"runtime"`
	OS                *string  `json:"os"`
	Status            string   `json:"status"`
	FunctionCount     int      `json:"function_count"`
	ConnectedAtMS     int64    `json:"connected_at_ms"`
	ActiveInvocations int64    `json:"active_invocations"`
	Isolation         *string  `json:"isolation"`
	IPAddress         *string  `json:"ip_address"`
	PID               *int     `json:"pid,omitempty"`
	Internal          bool     `json:"internal"`
	Engine            string   `json:"engine,omitempty"`   // in a cluster: the engine it is connected to
	Features          []string `json:"features,omitempty"` // what a 0.25+ SDK declared
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func summarize(w WorkerInfo) workerSummary {
	s := workerSummary{Name: w.Name, Namespace: nsOrDefault(w.Namespace), Features: w.Features, Description: nullable(w.Description), Version: nullable(w.Version),
		ID: w.ID, Runtime: nullable(w.Runtime), OS: nullable(w.OS), Status: w.Status,
		FunctionCount: len(w.Functions), ConnectedAtMS: w.ConnectedAt.UnixMilli(),
		ActiveInvocations: w.ActiveInvocations, Isolation: nullable(w.Isolation),
		IPAddress: nullable(w.IPAddress), Internal: w.Internal, Engine: w.Engine}
	if w.PID != 0 {
		pid := w.PID
		s.PID = &pid
	}
	return s
}

func (e *Engine) fnWorkersList(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		Search  string `json:"search"`
		Runtime string `json:"runtime"`
		Status  string `json:"status"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	out := []workerSummary{}
	for _, w := range e.clusterWorkers(e.Snapshot().Workers) {
		if in.Runtime != "" && w.Runtime != in.Runtime || in.Status != "" && w.Status != in.Status {
			continue
		}
		if in.Search != "" && !containsFold(w.Name+" "+w.ID+" "+w.Description, in.Search) {
			continue
		}
		out = append(out, summarize(w))
	}
	return marshal(map[string]any{"workers": out})
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func (e *Engine) fnWorkersInfo(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		Name      string `json:"name"`
		ID        string `json:"id"`
		Namespace string `json:"namespace"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	if in.Name == "" && in.ID == "" {
		return nil, badArgs("name is required")
	}
	snap := e.Snapshot()
	// In a cluster: every engine's workers and functions (other engines'
	// trigger types and bindings are not known here).
	snap.Workers, snap.Functions = e.clusterWorkers(snap.Workers), e.clusterFunctions(snap.Functions)
	var found []WorkerInfo
	for _, w := range snap.Workers {
		if (in.Name != "" && w.Name != in.Name && w.ID != in.Name) || (in.ID != "" && w.ID != in.ID) ||
			in.Namespace != "" && nsOrDefault(w.Namespace) != in.Namespace {
			continue
		}
		found = append(found, w)
	}
	w, err := resolve(found, in.Namespace != "", func(w WorkerInfo) string { return w.Namespace })
	if err != nil {
		what := in.Name + in.ID
		if in.Namespace != "" {
			what += " in namespace " + in.Namespace
		}
		return nil, resolveError("worker", what, err)
	}
	fns := []functionSummary{}
	for _, f := range snap.Functions {
		if contains(f.WorkerIDs, w.ID) || f.Internal && w.Internal && contains(w.Functions, f.ID) {
			fns = append(fns, summarizeFunction(f))
		}
	}
	types := []triggerTypeSummary{}
	for _, t := range snap.TriggerTypes {
		if contains(w.TriggerTypes, t.ID) {
			types = append(types, triggerTypeSummary{ID: t.ID, WorkerName: t.Worker, Description: t.Description})
		}
	}
	regs := []registeredTrigger{}
	for _, t := range snap.Triggers {
		if t.OwnerWorker == w.ID {
			regs = append(regs, registered(t))
		}
	}
	return marshal(map[string]any{"worker": summarize(w), "functions": fns, "trigger_types": types, "registered_triggers": regs})
}

// errAmbiguous and errMissing are what resolve reports.
var (
	errMissing = errors.New("not found")
)

type ambiguous []string // the namespaces a name is in

func (a ambiguous) Error() string {
	return "present in several namespaces: " + strings.Join(a, ", ") + "; name one with namespace"
}

// resolve picks one entry among those found under a name, as iii's
// discovery functions do: with an explicit namespace (strict) the one
// there; without, the default namespace's, else the only one, else an
// ambiguity naming the namespaces.
func resolve[T any](found []T, strict bool, nsOf func(T) string) (T, error) {
	var zero T
	if len(found) == 0 {
		return zero, errMissing
	}
	if strict || len(found) == 1 {
		return found[0], nil
	}
	for _, x := range found {
		if nsOrDefault(nsOf(x)) == DefaultNamespace {
			return x, nil
		}
	}
	var nss []string
	for _, x := range found {
		nss = append(nss, nsOrDefault(nsOf(x)))
	}
	sort.Strings(nss)
	return zero, ambiguous(slices.Compact(nss))
}

func resolveError(kind, what string, err error) error {
	var a ambiguous
	if errors.As(err, &a) {
		return &protocol.ErrorBody{Code: CodeInvalidArguments, Message: fmt.Sprintf("%s %q is %v", kind, what, a)}
	}
	if kind == "function" {
		return &protocol.ErrorBody{Code: CodeNotFound, Message: fmt.Sprintf("Function %s not found", what)}
	}
	return &protocol.ErrorBody{Code: CodeNotFound, Message: fmt.Sprintf("%s %q not found", kind, what)}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type functionSummary struct {
	FunctionID  string          `json:"function_id"`
	Namespace   string          `json:"namespace"`
	WorkerName  string          `json:"worker_name"`
	Workers     []string        `json:"workers"`
	Description string          `json:"description,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	Engines     []string        `json:"engines,omitempty"` // in a cluster: the engines serving it
}

func summarizeFunction(f FunctionInfo) functionSummary {
	return functionSummary{FunctionID: f.ID, Namespace: nsOrDefault(f.Namespace), WorkerName: f.Workers[0], Workers: f.Workers,
		Description: f.Description, Metadata: f.Metadata, Engines: f.Engines}
}

// hiddenFunction reports whether a function is internal: engine::*
// (except engine::queue::*) or marked metadata.internal.
func hiddenFunction(f FunctionInfo) bool {
	if strings.HasPrefix(f.ID, "engine::") && !strings.HasPrefix(f.ID, "engine::queue::") {
		return true
	}
	if strings.HasPrefix(f.ID, "configuration::") { // the engine's own, as engine::* (the SDKs call both in default)
		return true
	}
	var meta struct {
		Internal bool `json:"internal"`
	}
	if len(f.Metadata) > 0 && json.Unmarshal(f.Metadata, &meta) == nil && meta.Internal {
		return true
	}
	return false
}

type functionsListArgs struct {
	Search          string   `json:"search"`
	Prefix          string   `json:"prefix"`
	Worker          string   `json:"worker"`
	Workers         []string `json:"workers"`
	IncludeInternal bool     `json:"include_internal"`
}

type functionsList struct {
	Functions []functionSummary `json:"functions"`
}

func (e *Engine) listFunctions(in functionsListArgs) (functionsList, error) {
	out := functionsList{Functions: []functionSummary{}}
	type ranked struct {
		f    FunctionInfo
		rank int
	}
	var rs []ranked
	for _, f := range e.clusterFunctions(e.Snapshot().Functions) {
		if !in.IncludeInternal && hiddenFunction(f) {
			continue
		}
		if in.Prefix != "" && !strings.HasPrefix(f.ID, in.Prefix) {
			continue
		}
		if in.Worker != "" && !contains(f.Workers, in.Worker) && !contains(f.WorkerIDs, in.Worker) {
			continue
		}
		if len(in.Workers) > 0 {
			match := false
			for _, w := range in.Workers {
				match = match || contains(f.Workers, w) || contains(f.WorkerIDs, w)
			}
			if !match {
				continue
			}
		}
		rank := 0
		if in.Search != "" {
			q := strings.ToLower(in.Search)
			id := strings.ToLower(f.ID)
			switch {
			case strings.HasPrefix(id, q):
				rank = 0
			case strings.Contains(id, "::"+q):
				rank = 1
			case strings.Contains(id, q) || strings.Contains(strings.ToLower(f.Description), q):
				rank = 2
			default:
				continue
			}
		}
		rs = append(rs, ranked{f, rank})
	}
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].rank < rs[j].rank })
	for _, r := range rs {
		out.Functions = append(out.Functions, summarizeFunction(r.f))
	}
	return out, nil
}

func (e *Engine) fnFunctionsList(_ context.Context, call *Call) (json.RawMessage, error) {
	var in functionsListArgs
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	out, err := e.listFunctions(in)
	if err != nil {
		return nil, err
	}
	if c := e.sessionCaller(call); c != nil {
		// A caller of an RBAC listener sees only what it may call, as in iii.
		kept := out.Functions[:0]
		for _, f := range out.Functions {
			if ok, _ := c.session.allows(e, f.FunctionID, f.Namespace); ok {
				kept = append(kept, f)
			}
		}
		out.Functions = kept
	}
	return marshal(out)
}

type functionDetail struct {
	FunctionID         string              `json:"function_id"`
	Namespace          string              `json:"namespace"`
	WorkerName         string              `json:"worker_name"`
	Workers            []string            `json:"workers"`
	Description        string              `json:"description,omitempty"`
	RequestSchema      json.RawMessage     `json:"request_schema,omitempty"`
	ResponseSchema     json.RawMessage     `json:"response_schema,omitempty"`
	Metadata           json.RawMessage     `json:"metadata,omitempty"`
	RegisteredTriggers []triggerBindingRef `json:"registered_triggers"`
}

type triggerBindingRef struct {
	ID          string          `json:"id"`
	TriggerType string          `json:"trigger_type"`
	Config      json.RawMessage `json:"config"`
}

func detail(f FunctionInfo, triggers []TriggerInfo) functionDetail {
	d := functionDetail{FunctionID: f.ID, Namespace: nsOrDefault(f.Namespace), WorkerName: f.Workers[0], Workers: f.Workers, Description: f.Description,
		RequestSchema: f.RequestFormat, ResponseSchema: f.ResponseFormat, Metadata: f.Metadata,
		RegisteredTriggers: []triggerBindingRef{}}
	for _, t := range triggers {
		if t.FunctionID == f.ID && nsOrDefault(t.Namespace) == nsOrDefault(f.Namespace) {
			d.RegisteredTriggers = append(d.RegisteredTriggers, triggerBindingRef{ID: t.ID, TriggerType: t.Type, Config: t.Config})
		}
	}
	return d
}

func (e *Engine) fnFunctionsInfo(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		FunctionID  string   `json:"function_id"`
		FunctionIDs []string `json:"function_ids"`
		Namespace   string   `json:"namespace"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	switch {
	case in.FunctionID != "" && len(in.FunctionIDs) > 0:
		return nil, badArgs("give function_id or function_ids, not both")
	case in.FunctionID == "" && len(in.FunctionIDs) == 0:
		return nil, badArgs("function_id or function_ids is required")
	case len(in.FunctionIDs) > 32:
		return nil, badArgs("at most 32 function_ids per call, got %d", len(in.FunctionIDs))
	}
	snap := e.Snapshot()
	snap.Functions = e.clusterFunctions(snap.Functions) // in a cluster, every engine's (sorted by id, then namespace)
	find := func(id string) (FunctionInfo, error) {
		i := sort.Search(len(snap.Functions), func(i int) bool { return snap.Functions[i].ID >= id })
		var found []FunctionInfo
		for ; i < len(snap.Functions) && snap.Functions[i].ID == id; i++ {
			if f := snap.Functions[i]; in.Namespace == "" || nsOrDefault(f.Namespace) == in.Namespace {
				found = append(found, f)
			}
		}
		return resolve(found, in.Namespace != "", func(f FunctionInfo) string { return f.Namespace })
	}
	what := func(id string) string {
		if in.Namespace != "" {
			return id + " in namespace " + in.Namespace
		}
		return id
	}
	if in.FunctionID != "" {
		f, err := find(in.FunctionID)
		if err != nil {
			return nil, resolveError("function", what(in.FunctionID), err)
		}
		return marshal(detail(f, snap.Triggers))
	}
	out := make([]any, 0, len(in.FunctionIDs))
	for _, id := range in.FunctionIDs {
		f, err := find(id)
		var a ambiguous
		switch {
		case err == nil:
			out = append(out, detail(f, snap.Triggers))
		case errors.As(err, &a):
			out = append(out, map[string]any{"function_id": id, "error": "ambiguous", "namespaces": []string(a)})
		default:
			out = append(out, map[string]string{"function_id": id, "error": "not_found"})
		}
	}
	return marshal(map[string]any{"functions": out})
}

type triggerTypeSummary struct {
	ID          string `json:"id"`
	Namespace   string `json:"namespace"`
	WorkerName  string `json:"worker_name"`
	Description string `json:"description"`
}

func (e *Engine) fnTriggersList(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		Search          string `json:"search"`
		Prefix          string `json:"prefix"`
		Worker          string `json:"worker"`
		IncludeInternal bool   `json:"include_internal"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	out := []triggerTypeSummary{}
	for _, t := range e.Snapshot().TriggerTypes {
		if !in.IncludeInternal && strings.HasPrefix(t.ID, "engine::") ||
			in.Prefix != "" && !strings.HasPrefix(t.ID, in.Prefix) ||
			in.Worker != "" && t.Worker != in.Worker && t.WorkerID != in.Worker ||
			in.Search != "" && !containsFold(t.ID+" "+t.Description, in.Search) {
			continue
		}
		out = append(out, triggerTypeSummary{ID: t.ID, Namespace: t.Namespace, WorkerName: t.Worker, Description: t.Description})
	}
	return marshal(map[string]any{"triggers": out})
}

// fnTriggersInfo describes the trigger type id in the namespace named
// (absent: the default one's, else the first, by namespace, of those of
// that id).
func (e *Engine) fnTriggersInfo(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		ID        string `json:"id"`
		Namespace string `json:"namespace"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	if in.ID == "" {
		return nil, badArgs("id is required")
	}
	var found *TriggerTypeInfo
	for _, t := range e.Snapshot().TriggerTypes { // sorted by id, then namespace
		if t.ID != in.ID || in.Namespace != "" && t.Namespace != in.Namespace {
			continue
		}
		if found == nil || t.Namespace == DefaultNamespace {
			found = &t
		}
	}
	if found == nil {
		where := ""
		if in.Namespace != "" {
			where = " in namespace " + in.Namespace
		}
		return nil, &protocol.ErrorBody{Code: CodeNotFound, Message: fmt.Sprintf("trigger type %s not found%s", in.ID, where)}
	}
	return marshal(triggerTypeDetail(*found))
}

func triggerTypeDetail(t TriggerTypeInfo) map[string]any {
	d := map[string]any{"id": t.ID, "namespace": t.Namespace, "worker_name": t.Worker, "description": t.Description,
		"instance_count": t.Instances}
	if len(t.TriggerRequestFormat) > 0 {
		d["configuration_schema"] = t.TriggerRequestFormat
	}
	if len(t.CallRequestFormat) > 0 {
		d["request_schema"] = t.CallRequestFormat
	}
	return d
}

type registeredTrigger struct {
	ID            string          `json:"id"`
	TriggerType   string          `json:"trigger_type"`
	FunctionID    string          `json:"function_id"`
	Namespace     string          `json:"namespace"`
	WorkerName    *string         `json:"worker_name"`
	Config        json.RawMessage `json:"config"`
	ConfigSummary string          `json:"config_summary"`
	Active        bool            `json:"active"`
}

func registered(t TriggerInfo) registeredTrigger {
	summary := string(t.Config)
	if r := []rune(summary); len(r) > 80 {
		summary = string(r[:80]) + "…"
	}
	return registeredTrigger{ID: t.ID, TriggerType: t.Type, FunctionID: t.FunctionID, Namespace: nsOrDefault(t.Namespace), WorkerName: nullable(t.Worker),
		Config: t.Config, ConfigSummary: summary, Active: t.Active}
}

func (e *Engine) fnRegisteredTriggersList(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		Search          string `json:"search"`
		TriggerType     string `json:"trigger_type"`
		FunctionID      string `json:"function_id"`
		Worker          string `json:"worker"`
		IncludeInternal bool   `json:"include_internal"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	out := []registeredTrigger{}
	for _, t := range e.Snapshot().Triggers {
		if !in.IncludeInternal && strings.HasPrefix(t.Type, "engine::") ||
			in.TriggerType != "" && t.Type != in.TriggerType ||
			in.FunctionID != "" && t.FunctionID != in.FunctionID ||
			in.Worker != "" && t.Worker != in.Worker && t.OwnerWorker != in.Worker ||
			in.Search != "" && !containsFold(t.ID+" "+t.Type+" "+t.FunctionID+" "+string(t.Config), in.Search) {
			continue
		}
		out = append(out, registered(t))
	}
	return marshal(map[string]any{"registered_triggers": out})
}

func (e *Engine) fnRegisteredTriggersInfo(_ context.Context, call *Call) (json.RawMessage, error) {
	id, err := idArg(call)
	if err != nil {
		return nil, err
	}
	snap := e.Snapshot()
	for _, t := range snap.Triggers {
		if t.ID != id && !contains(t.ClaimIDs, id) {
			continue
		}
		out := map[string]any{"id": t.ID, "trigger_type": t.Type, "function_id": t.FunctionID,
			"worker_name": nullable(t.Worker), "config": t.Config, "active": t.Active, "trigger": nil, "function": nil}
		if len(t.Metadata) > 0 {
			out["metadata"] = t.Metadata
		}
		for _, tt := range snap.TriggerTypes {
			if tt.ID == t.Type && tt.Namespace == t.ProviderNamespace {
				out["trigger"] = triggerTypeDetail(tt)
			}
		}
		for _, f := range snap.Functions {
			if f.ID == t.FunctionID {
				out["function"] = detail(f, snap.Triggers)
			}
		}
		return marshal(out)
	}
	return nil, &protocol.ErrorBody{Code: CodeNotFound, Message: fmt.Sprintf("trigger %s not found", id)}
}

func (e *Engine) fnRegisterTrigger(ctx context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		TriggerType string          `json:"trigger_type"`
		FunctionID  string          `json:"function_id"`
		Config      json.RawMessage `json:"config"`
		Metadata    json.RawMessage `json:"metadata"`
		Namespace   string          `json:"namespace"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	if c := e.sessionCaller(call); c != nil {
		// A caller of an RBAC listener binds within its session: its
		// allowed trigger types, its function prefix, the functions it may
		// reach in the target's namespace.
		s := c.session
		if s.allowedTriggerTypes != nil && !contains(s.allowedTriggerTypes, in.TriggerType) {
			return nil, &protocol.ErrorBody{Code: CodeForbidden,
				Message: fmt.Sprintf("Trigger type '%s' is not allowed for this session.", in.TriggerType)}
		}
		in.FunctionID = s.registeredID(in.FunctionID)
		if why := e.mayTarget(c, in.FunctionID, in.Namespace); why != "" {
			return nil, &protocol.ErrorBody{Code: CodeForbidden, Message: why}
		}
	}
	t := Trigger{Type: in.TriggerType, FunctionID: in.FunctionID, Config: in.Config, Metadata: in.Metadata}
	t.inNamespace(in.Namespace)
	id, err := e.RegisterTrigger(ctx, t)
	if err != nil {
		return nil, err
	}
	return marshal(map[string]string{"id": id})
}

func (e *Engine) fnUnregisterTrigger(_ context.Context, call *Call) (json.RawMessage, error) {
	id, err := idArg(call)
	if err != nil {
		return nil, err
	}
	return marshal(map[string]bool{"removed": e.UnregisterTrigger(id)})
}

// fnChannelsCreate is engine::channels::create: {buffer_size?} (default
// 64, at most 1024, 0 as 1, as iii) -> {writer, reader} refs. A channel
// created by a worker goes when that worker disconnects.
func (e *Engine) fnChannelsCreate(_ context.Context, call *Call) (json.RawMessage, error) {
	var in struct {
		BufferSize *int64 `json:"buffer_size"`
	}
	if err := decodeArgs(call.Data, &in); err != nil {
		return nil, err
	}
	size := int64(channel.DefaultBufferSize)
	if in.BufferSize != nil {
		if *in.BufferSize < 0 {
			return nil, &protocol.ErrorBody{Code: CodeDeserialization,
				Message: fmt.Sprintf("invalid input: buffer_size must be a non-negative integer, got %d", *in.BufferSize)}
		}
		size = min(max(*in.BufferSize, 1), channel.MaxBufferSize)
	}
	w, r := e.channels.Create(int(size), call.CallerWorkerID)
	return marshal(struct {
		Writer channel.Ref `json:"writer"`
		Reader channel.Ref `json:"reader"`
	}{w, r})
}
