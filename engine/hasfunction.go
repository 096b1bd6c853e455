package engine

// HasFunction reports whether a function with this id is registered (by a
// worker or in-process), so a module can route to a worker's override of
// one of its functions, as iii's stream does with stream::get(<name>).
func (e *Engine) HasFunction(id string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	f := e.functions[id]
	return f != nil && len(f.regs) > 0
}
