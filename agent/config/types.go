package config

import "github.com/edgefleet/edgefleet/shared/configfile"

// The units of the configuration, parsed by shared/configfile as in every
// configuration document of the module.
type (
	// ByteSize is a size in bytes: an integer or a string with a unit,
	// "64MiB", "512 KiB", "1GB" (KB, MB, GB, TB are powers of 1000; KiB,
	// MiB, GiB, TiB powers of 1024; units are case-insensitive).
	ByteSize = configfile.ByteSize
	// Duration is a time.Duration written with a unit: "2s", "1m30s",
	// "500ms", "7d".
	Duration = configfile.Duration
	// FileMode is a file's permission bits, written in octal: "0660".
	FileMode = configfile.FileMode
)
