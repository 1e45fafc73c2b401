package telemetry

// Checking the device ids, epochs and record kinds callers pass.

import (
	"fmt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

func checkIDs(device, epoch string) error {
	if err := protocol.ValidateDeviceID(device); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if epoch != "" {
		if err := protocol.ValidateDeviceID(epoch); err != nil {
			return fmt.Errorf("%w: device %q: epoch %q: must be 1 to %d of [A-Za-z0-9._-]", ErrInvalid, device, epoch, protocol.MaxDeviceIDLen)
		}
	}
	return nil
}

// validKind: [a-z0-9][a-z0-9._-]*, at most 64 bytes, as the protocol's
// tokens.
func validKind(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
