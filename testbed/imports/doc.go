// Package imports holds the test that enforces the module's import rules:
// which rooms (shared/, agent/, controlplane/, testbed/, ...) may import
// which, tests included. The rules are the table in rules_test.go;
// docs/architecture.md ("Rooms and imports") shows them.
//
// TestImportRules runs `go list -deps -test -json ./...` on the module
// under several GOOS/GOARCH and build-tag configurations (every build tag
// the module's files use is in one of them; TestBuildTagsCovered checks)
// and fails on every import that breaks a rule, direct or through other
// packages, as
//
//	IMPORTER imports IMPORTED (rule: NAME — what the rule says)
//
// It lives in testbed/ because it is about the whole module: it imports
// no package of it, so it changes nothing in the graph it checks, and
// testbed/ is the room for tests that span the others.
package imports
