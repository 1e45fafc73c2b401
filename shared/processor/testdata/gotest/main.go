//go:build wasip1

// Command gotest is a processor for the host's tests. What it does depends
// on the name of its first input tensor: "panic" panics, "loop" never
// returns, "hog" allocates until memory runs out, "reject" refuses the
// input, "sandbox" reports what the sandbox lets it see; anything else is
// echoed back.
package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/edgefleet/edgefleet/shared/processor/guest"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

func init() { guest.Handle(handle) }

func main() {}

var sink [][]byte

func handle(in []tensor.Tensor) ([]tensor.Tensor, error) {
	if len(in) == 0 {
		return nil, errors.New("no input tensors")
	}
	switch in[0].Name {
	case "panic":
		panic("boom: the handler panicked")
	case "loop":
		//lint:ignore SA5002 spinning is the point: it tests the host's timeout
		for {
		}
	case "hog":
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case "reject":
		return nil, fmt.Errorf("cannot take a tensor named %q", in[0].Name)
	case "sandbox":
		return []tensor.Tensor{report("report", sandbox())}, nil
	}
	return in, nil
}

func sandbox() string {
	fmt.Println("to stdout")
	fmt.Fprintln(os.Stderr, "to stderr")
	_, fsErr := os.ReadDir("/")
	_, fileErr := os.ReadFile("/etc/hostname")
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("readdir=%v\nreadfile=%v\nenv=%d\nargs=%d\nyear=%d\nrandom=%x\n",
		fsErr != nil, fileErr != nil, len(os.Environ()), len(os.Args), time.Now().Year(), b)
}

func report(name, s string) tensor.Tensor {
	return tensor.Tensor{Name: name, Datatype: tensor.Uint8, Shape: []int64{int64(len(s))}, Data: []byte(s)}
}
