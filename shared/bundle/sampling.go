package bundle

import (
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/shared/configfile"
)

// Bounds and the default of a sampling policy (docs/bundle-format.md).
const (
	// DefaultSampleBytesPerDay is maxBytesPerDay when a spec's sampling
	// policy leaves it out.
	DefaultSampleBytesPerDay = 1 << 20
	// MinSampleBytesPerDay and MaxSampleBytesPerDay bound maxBytesPerDay.
	MinSampleBytesPerDay = 1 << 10
	MaxSampleBytesPerDay = 1 << 30
)

// Sampling is a bundle's opt-in data sampling policy: the share of the
// requests it answers whose model inputs (after the pre-processor) and
// outputs a device keeps as "sample" records for the feature store
// (docs/integrations.md), within a byte budget per device and UTC day.
// A bundle without one is not sampled.
type Sampling struct {
	// Rate is the share of successful requests sampled, in (0, 1].
	Rate float64 `json:"rate"`
	// MaxBytesPerDay caps the encoded sample records one device appends
	// per UTC day for this bundle version; samples beyond it are dropped
	// and counted.
	MaxBytesPerDay int64 `json:"maxBytesPerDay"`
}

// SamplingSpec is the sampling policy as bundle.yaml writes it:
// maxBytesPerDay may carry a unit ("1MiB") and defaults to
// DefaultSampleBytesPerDay.
type SamplingSpec struct {
	Rate           float64             `json:"rate"`
	MaxBytesPerDay configfile.ByteSize `json:"maxBytesPerDay,omitempty"`
}

// policy is the manifest's form of s.
func (s *SamplingSpec) policy() *Sampling {
	if s == nil {
		return nil
	}
	p := &Sampling{Rate: s.Rate, MaxBytesPerDay: int64(s.MaxBytesPerDay)}
	if p.MaxBytesPerDay == 0 {
		p.MaxBytesPerDay = DefaultSampleBytesPerDay
	}
	return p
}

// validate checks the policy; field is where it sits ("sampling").
func (s *Sampling) validate(field string) error {
	if math.IsNaN(s.Rate) || s.Rate <= 0 || s.Rate > 1 {
		return fmt.Errorf("%s.rate %v: must be more than 0 and at most 1 (leave sampling out to sample nothing)", field, s.Rate)
	}
	if s.MaxBytesPerDay < MinSampleBytesPerDay || s.MaxBytesPerDay > MaxSampleBytesPerDay {
		return fmt.Errorf("%s.maxBytesPerDay %d: must be %s to %s", field, s.MaxBytesPerDay,
			configfile.ByteSize(MinSampleBytesPerDay), configfile.ByteSize(MaxSampleBytesPerDay))
	}
	return nil
}
