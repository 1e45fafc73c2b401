// Package configref holds the test that keeps docs/config-reference.md,
// the reference of every configuration key, equal to the code: the edge
// agent's configuration (agent/config.Config), fleetd's
// (controlplane/fleetd.Config) and a rollout or experiment spec
// (controlplane/rollout.Spec). The reference is generated from the
// structs — keys, types and defaults by reflection (shared/configfile.Keys),
// descriptions from the fields' doc comments — so a field's comment is
// where a key is documented. TestConfigReference fails when the file
// differs from what the code generates; refresh it with
//
//	go test ./testbed/configref -run TestConfigReference -update
//
// or go generate ./testbed/configref.
//
// It lives in testbed/ because it spans the agent and the control plane.
package configref

//go:generate go test -run TestConfigReference -update .
