package qemu

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// shellChannel connects a channel to a real bash reading commands from a
// socket, as the image's edgefleet-shell does on the virtio-serial port,
// and announcing itself the same way.
func shellChannel(t *testing.T) (*channel, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command("bash", "-c", `printf '\036EF-READY\n'; cd /; exec bash --noprofile --norc -s`)
	return newChannel(startOnSocketPair(t, cmd), slog.New(slog.DiscardHandler)), cmd
}

func TestChannelExec(t *testing.T) {
	c, _ := shellChannel(t)
	ctx := context.Background()
	never := make(chan struct{})
	for _, tc := range []struct {
		name, command string
		want          string
		code          int
	}{
		{"echo", "echo hello", "hello\n", 0},
		{"no trailing newline", "printf abc", "abc", 0},
		{"empty", "true", "", 0},
		{"exit status", "echo out; echo err >&2; exit 3", "out\nerr\n", 3},
		{"single quotes", `echo 'it'"'"'s'`, "it's\n", 0},
		{"multi-line", "for i in 1 2; do\n  echo $i\ndone", "1\n2\n", 0},
		{"stdin is /dev/null", "cat; echo done", "done\n", 0},
		{"blank lines kept", "printf '\\n\\nx\\n\\n'", "\n\nx\n\n", 0},
		{"syntax error", "if then", "", 2},
		{"fake marker in text", `echo "EF1}0"`, "EF1}0\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code, err := c.exec(ctx, tc.command, never)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "syntax error" {
				if code != tc.code {
					t.Fatalf("code %d, want %d (output %q)", code, tc.code, out)
				}
				return
			}
			if string(out) != tc.want || code != tc.code {
				t.Fatalf("got %q, %d; want %q, %d", out, code, tc.want, tc.code)
			}
		})
	}

	t.Run("large output", func(t *testing.T) {
		out, code, err := c.exec(ctx, "head -c 3000000 /dev/zero | tr '\\0' a", never)
		if err != nil || code != 0 {
			t.Fatal(code, err)
		}
		if len(out) != 3000000 || bytes.Count(out, []byte("a")) != 3000000 {
			t.Fatalf("got %d bytes", len(out))
		}
	})

	t.Run("deadline", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, _, err := c.exec(short, "sleep 600", never); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want the deadline", err)
		}
		// timeout(1) killed the command in the "guest", so the next
		// one runs.
		out, code, err := c.exec(ctx, "echo after", never)
		if err != nil || code != 0 || string(out) != "after\n" {
			t.Fatalf("after a timed-out command: %q %d %v", out, code, err)
		}
		if d := time.Since(start); d > 300*time.Second { // not the 600 s of the sleep
			t.Fatalf("the timed-out command was not killed (%v)", d)
		}
	})

	t.Run("shell restarted", func(t *testing.T) {
		// A shell announcing itself during a command means the command's
		// shell is gone.
		_, _, err := c.exec(ctx, `printf '\036EF-READY\n'; sleep 0.2`, never)
		if !errors.Is(err, ErrShellRestarted) {
			t.Fatalf("err %v, want ErrShellRestarted", err)
		}
		out, _, err := c.exec(ctx, "echo still here", never)
		if err != nil || string(out) != "still here\n" {
			t.Fatalf("%q %v", out, err)
		}
	})

	t.Run("machine gone", func(t *testing.T) {
		gone := make(chan struct{})
		close(gone)
		// The result may win the race against the closed channel; the
		// command must not hang either way.
		c.exec(ctx, "sleep 0.5", gone)
	})
}

func TestChannelClosed(t *testing.T) {
	c, shell := shellChannel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	never := make(chan struct{})
	if _, _, err := c.exec(ctx, "true", never); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, func() { shell.Process.Kill() })
	_, _, err := c.exec(ctx, "sleep 5", never)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the channel closed", err)
	}
	if _, _, err := c.exec(ctx, "true", never); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after the shell died: %v", err)
	}
}

// feedAll runs data through a channel's parser in the given chunks and
// returns what command 1 got.
func feedAll(chunks [][]byte) (result, bool) {
	c := &channel{log: slog.New(slog.DiscardHandler), ready: make(chan struct{}), waiting: map[int]chan result{}, closed: make(chan struct{})}
	w := make(chan result, 1)
	c.waiting[1] = w
	for _, ch := range chunks {
		c.feed(ch)
	}
	select {
	case r := <-w:
		return r, true
	default:
		return result{}, false
	}
}

func TestChannelFeedChunks(t *testing.T) {
	stream := []byte("noise\x1eE\x1eEF-READY\nmore noise\x1eEF1{\nline 1\n\x1eEF partial\nline 2\n\n\x1eEF1}7\ntrailing")
	whole, ok := feedAll([][]byte{stream})
	if !ok {
		t.Fatal("no result")
	}
	if string(whole.out) != "line 1\n\x1eEF partial\nline 2\n" || whole.code != 7 {
		t.Fatalf("got %q %d", whole.out, whole.code)
	}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	one, ok := feedAll(bytewise)
	if !ok || !bytes.Equal(one.out, whole.out) || one.code != whole.code {
		t.Fatalf("byte by byte: %q %d %v", one.out, one.code, ok)
	}
}

// FuzzChannelFeed checks that the command channel's parser never panics
// and that how the guest's output is split into reads does not change
// what a command gets.
func FuzzChannelFeed(f *testing.F) {
	f.Add([]byte("\x1eEF-READY\n\x1eEF1{\nhello\n\n\x1eEF1}0\n"), uint8(3))
	f.Add([]byte("\x1eEF1{\n\x1eEF1}x\n\x1eEF1}2\n"), uint8(1))
	f.Add([]byte("\x1eEF1{\n\x1eEF-READY\n"), uint8(5))
	f.Add([]byte("\x1e\x1e\x1eEEF1{{\n\n"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		whole, ok1 := feedAll([][]byte{data})
		n := int(step%16) + 1
		var chunks [][]byte
		for i := 0; i < len(data); i += n {
			chunks = append(chunks, data[i:min(i+n, len(data))])
		}
		split, ok2 := feedAll(chunks)
		if ok1 != ok2 || !bytes.Equal(whole.out, split.out) || whole.code != split.code || (whole.err == nil) != (split.err == nil) {
			t.Fatalf("whole %v %q %d %v; in chunks of %d: %v %q %d %v", ok1, whole.out, whole.code, whole.err, n, ok2, split.out, split.code, split.err)
		}
	})
}

func TestQuote(t *testing.T) {
	for _, s := range []string{"", "a b", "it's", `"$HOME" $(id) ;|&`, "'''", "line\nbreak"} {
		out, err := exec.Command("bash", "-c", "printf %s "+quote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("quote(%q): bash read %q (%v)", s, out, err)
		}
	}
}
