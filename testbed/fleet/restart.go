package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
)

// RestartFleetd stops the in-process fleetd as a SIGTERM would and starts
// a new one on the same data directory, HTTP address and (with the
// embedded broker) MQTT address, as a restarted daemon would come back:
// the inventory, the registry, the rollouts and the embedded broker's
// retained messages and sessions are read back from disk, the operator
// and enrolment tokens stay the same (f.API keeps working), and the
// agents reconnect through the proxy by themselves. The external servers
// (mosquitto, MinIO) keep running. down, if not nil, is called while
// fleetd is stopped.
func (f *Fleet) RestartFleetd(ctx context.Context, down func()) error {
	if f.Server == nil {
		return errors.New("fleet: no in-process fleetd to restart (Remote)")
	}
	cfg, err := f.fleetdConfig()
	if err != nil {
		return err
	}
	cfg.HTTP.Listen = f.Server.HTTPAddr()
	url := f.Server.URL()
	if f.opts.Broker == BrokerEmbedded {
		cfg.Broker.Listen = f.Server.MQTTAddr()
	}
	if err := f.stopFleetd(); err != nil {
		return err
	}
	if down != nil {
		down()
	}
	srv, err := f.runFleetd(ctx, cfg, "restarted fleetd")
	if err != nil {
		return err
	}
	if srv.URL() != url {
		return fmt.Errorf("fleet: restarted fleetd serves %s, was %s", srv.URL(), url)
	}
	return nil
}

// runFleetd creates fleetd from cfg as f.Server and runs it in the
// background (f.cancel stops it, f.fleetdErr gets what Run returned),
// points the proxy at its embedded broker and waits until it is connected
// to its broker. what names it in errors: "fleetd", "restarted fleetd".
func (f *Fleet) runFleetd(ctx context.Context, cfg fleetd.Config, what string) (*fleetd.Server, error) {
	srv, err := fleetd.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("fleet: starting %s: %w", what, err)
	}
	f.Server = srv
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel, f.fleetdErr = cancel, make(chan error, 1)
	go func() { f.fleetdErr <- srv.Run(runCtx) }()
	if f.opts.Broker == BrokerEmbedded {
		f.Proxy.SetTarget(srv.MQTTAddr())
	}
	readyCtx, cancelReady := context.WithTimeout(ctx, startTimeout)
	defer cancelReady()
	if err := srv.Ready(readyCtx); err != nil {
		return nil, fmt.Errorf("fleet: %s not connected to its broker: %w", what, err)
	}
	return srv, nil
}

// stopFleetd stops the in-process fleetd and waits for it.
func (f *Fleet) stopFleetd() error {
	f.cancel()
	var errs []error
	select {
	case err := <-f.fleetdErr:
		if err != nil {
			errs = append(errs, fmt.Errorf("fleet: fleetd: %w", err))
		}
	case <-time.After(30 * time.Second):
		errs = append(errs, errors.New("fleet: fleetd did not stop within 30s"))
	}
	errs = append(errs, f.Server.Close())
	f.cancel = func() {}
	f.fleetdErr = make(chan error, 1)
	f.fleetdErr <- nil
	return errors.Join(errs...)
}

// fleetdConfig is the configuration startFleetd gave fleetd, with the
// external servers it started.
func (f *Fleet) fleetdConfig() (fleetd.Config, error) {
	o := f.opts
	cfg := fleetd.Config{
		DataDir: filepath.Join(f.dir, "fleetd"),
		HTTP:    fleetd.HTTPConfig{Listen: "127.0.0.1:0"},
		Broker: fleetd.BrokerConfig{
			Listen:     "127.0.0.1:0",
			PublicURLs: []string{"tcp://" + f.Proxy.Addr()},
		},
		Registry: fleetd.RegistryConfig{TrustedKeys: o.TrustKeys},
		Logger:   f.log.With("component", "fleetd"),
		Announce: io.Discard,
	}
	if m := f.Mosquitto; m != nil {
		const user = "_fleetd-1"
		cfg.Broker = fleetd.BrokerConfig{
			External:     "tcp://" + m.Addr,
			PublicURLs:   []string{"tcp://" + f.Proxy.Addr()},
			Username:     user,
			PasswordFile: filepath.Join(m.ConfDir, user+".password"),
			Mosquitto: fleetd.MosquittoConfig{
				PasswordFile: filepath.Join(m.ConfDir, fleetd.MosquittoPasswdFile),
				PIDFile:      m.PIDFile,
			},
		}
	}
	if m := f.MinIO; m != nil {
		creds, err := m.CredentialsFile(f.dir)
		if err != nil {
			return fleetd.Config{}, err
		}
		cfg.Registry = fleetd.RegistryConfig{Type: "s3", TrustedKeys: o.TrustKeys, S3: fleetd.S3Config{
			Endpoint: m.Addr, Bucket: "fleet", Prefix: "bundles/", CredentialsFile: creds, CreateBucket: true,
		}}
	}
	if o.Fleetd != nil {
		o.Fleetd(&cfg)
	}
	return cfg, nil
}
