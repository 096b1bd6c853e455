package observability

// SetGetenv replaces how new modules read OTEL_* environment fallbacks.
func SetGetenv(f func(string) (string, bool)) { lookupEnv = f }

// SetFunctionLabelLimit sets the function_id label cap of modules started
// afterwards and returns the previous one.
func SetFunctionLabelLimit(n int) int {
	old := functionLabelLimit
	functionLabelLimit = n
	return old
}
