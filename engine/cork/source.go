package cork

import "embed"

// Source holds this package's Go files (tests included; skip *_test.go
// when copying). `iii new worker --lang go` writes them into the scaffold
// next to the SDK, which imports this package.
//
//go:embed *.go
var Source embed.FS
