package observability

// SetGetenv replaces how new modules read OTEL_* environment fallbacks.
func SetGetenv(f func(string) (string, bool)) { lookupEnv = f }
