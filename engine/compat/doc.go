// Package compat is the engine's wire-compatibility suite: its tests run a
// real engine in-process and drive worker scripts written against the
// published iii-sdk packages (npm iii-sdk@0.22.1, PyPI iii-sdk==0.22.1), so
// a change that breaks an unchanged SDK worker fails here.
//
// The tests need the SDKs installed next to the scripts:
//
//	cd engine/compat/testdata/node && npm ci
//	python3 -m venv engine/compat/testdata/python/.venv
//	engine/compat/testdata/python/.venv/bin/pip install -r engine/compat/testdata/python/requirements.txt
//
// Without them the tests skip, or fail when CI=true. Run them with
//
//	go test -race ./engine/compat/...
//
// The package holds no code of its own.
package compat
