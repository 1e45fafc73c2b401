package fleet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
)

// MosquittoBin is where Debian's mosquitto package installs the broker.
const MosquittoBin = "/usr/sbin/mosquitto"

// startTimeout bounds the wait for an external server to listen.
const startTimeout = 60 * time.Second

// process is an external server the harness started.
type process struct {
	cmd    *exec.Cmd
	exited chan error
	out    *tailBuffer
	once   sync.Once
}

func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, exited: make(chan error, 1), out: &tailBuffer{max: 64 << 10}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- cmd.Wait() }()
	return p, nil
}

// waitReady polls ready until it returns nil, the process exits or
// startTimeout passes.
func (p *process) waitReady(what string, ready func() error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("fleet: %s exited: %v\n%s", what, err, p.out.String())
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleet: %s not ready after %s: %v\n%s", what, startTimeout, err, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and kills the process if it has not exited after
// 10 s.
func (p *process) stop() {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.exited:
			p.exited <- err
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			p.exited <- <-p.exited
		}
	})
}

// Mosquitto is a real mosquitto 2 on a loopback port, configured with
// the files fleetd mosquitto-config writes (fleetd.WriteMosquittoConfig).
type Mosquitto struct {
	// Addr is its listener ("127.0.0.1:PORT").
	Addr string
	// ConfDir holds the generated files: edgefleet.conf, .acl, .passwd
	// and USER.password of each service user.
	ConfDir string
	// PIDFile holds its pid, for fleetd's reload after enrolments.
	PIDFile string
	p       *process
}

// StartMosquitto generates mosquitto's configuration for serviceUsers in
// dir and starts bin (MosquittoBin if empty) with it.
func StartMosquitto(bin, dir string, serviceUsers []string) (*Mosquitto, error) {
	if bin == "" {
		bin = MosquittoBin
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w: mosquitto not found at %s (apt-get install mosquitto): %v", ErrArtifact, bin, err)
	}
	m := &Mosquitto{ConfDir: filepath.Join(dir, "conf"), PIDFile: filepath.Join(dir, "mosquitto.pid")}
	if err := fleetd.WriteMosquittoConfig(m.ConfDir, serviceUsers, io.Discard); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m.Addr = net.JoinHostPort("127.0.0.1", port)
	include, err := os.ReadFile(filepath.Join(m.ConfDir, fleetd.MosquittoConfFile))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	conf := fmt.Sprintf("listener %s 127.0.0.1\npersistence_location %s/\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n", port, dir) + string(include)
	if os.Getuid() == 0 {
		conf += "user root\n" // otherwise it drops to "mosquitto", who cannot read the directory
	}
	confFile := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	m.p, err = startProcess(exec.Command(bin, "-c", confFile))
	if err != nil {
		return nil, fmt.Errorf("fleet: starting mosquitto: %w", err)
	}
	if err := os.WriteFile(m.PIDFile, []byte(strconv.Itoa(m.p.cmd.Process.Pid)+"\n"), 0o600); err != nil {
		m.Close()
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if err := m.p.waitReady("mosquitto", func() error {
		c, err := net.Dial("tcp", m.Addr)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Log is the tail of mosquitto's output.
func (m *Mosquitto) Log() string { return m.p.out.String() }

// Close stops mosquitto.
func (m *Mosquitto) Close() error {
	m.p.stop()
	return nil
}

// MinIO is a real MinIO server on loopback.
type MinIO struct {
	// Addr is its S3 endpoint ("127.0.0.1:PORT").
	Addr string
	// User and Password are the root credentials.
	User, Password string
	p              *process
}

// StartMinIO runs the pinned MinIO server (bin, e.g. Artifacts.Tools +
// "/minio", from scripts/tools.sh) with its data in dir.
func StartMinIO(bin, dir string) (*MinIO, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w: minio not found at %s: run `make tools` (%v)", ErrArtifact, bin, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	pass := make([]byte, 16)
	rand.Read(pass)
	m := &MinIO{Addr: net.JoinHostPort("127.0.0.1", port), User: "edgefleet", Password: hex.EncodeToString(pass)}
	cmd := exec.Command(bin, "server", dir, "--address", m.Addr, "--console-address", "127.0.0.1:"+console, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.User, "MINIO_ROOT_PASSWORD="+m.Password, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	if m.p, err = startProcess(cmd); err != nil {
		return nil, fmt.Errorf("fleet: starting minio: %w", err)
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := m.p.waitReady("minio", func() error {
		resp, err := hc.Get("http://" + m.Addr + "/minio/health/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// CredentialsFile writes the credentials in the form fleetd's
// registry.s3.credentialsFile reads and returns its path.
func (m *MinIO) CredentialsFile(dir string) (string, error) {
	p := filepath.Join(dir, "s3.env")
	err := os.WriteFile(p, fmt.Appendf(nil, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", m.User, m.Password), 0o600)
	if err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	return p, nil
}

// Log is the tail of MinIO's output.
func (m *MinIO) Log() string { return m.p.out.String() }

// Close stops MinIO.
func (m *MinIO) Close() error {
	m.p.stop()
	return nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
