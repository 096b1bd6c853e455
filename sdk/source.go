package sdk

import "embed"

// Source holds this package's Go files (tests included; skip *_test.go
// when copying). `iii new worker --lang go` writes them into the scaffold,
// which cannot fetch this unpublished module.
//
//go:embed *.go
var Source embed.FS
