// Package configfile reads the module's configuration documents — the
// edge agent's configuration, fleetd's, fleetctl's contexts file, rollout
// and experiment specs — from YAML into Go structs, strictly, reporting
// every problem at once:
//
//   - keys are the struct fields' yaml (or json) tag names; an unknown key
//     is refused with the keys known there and a did-you-mean;
//   - a value of the wrong kind, a key set twice, YAML anchors and aliases,
//     a second document and a document over a size cap are refused;
//   - each problem is an *Error with the file, line and column of the key
//     or value and the key's path ("buffer.maxBytes", "waves[2].percent",
//     "labels.site"), formatted FILE:LINE:COLUMN: PATH: MESSAGE;
//   - the caller's own checks of the values (Options.Check) run in the same
//     pass and report through a Report, which gives each problem the
//     position of the key it names (or of the nearest enclosing key that
//     the document sets).
//
// Decode keeps where each key was (Source), so that a check run later —
// after command-line flags changed some settings (Set, Source.Forget) —
// still names the file and line of what it refuses.
//
// The units are parsed here, once for every document: sizes (ByteSize,
// "64MiB"), durations (Duration, "90s", "7d"), octal file modes (FileMode,
// "0660") and percentages (ParsePercent, "80%").
//
// Keys lists the settings of a configuration type, for tests that keep an
// example file complete and for the generated reference
// (docs/config-reference.md).
package configfile
