package shim

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

// backend is what a configuration opens: the hypervisor driver, the board
// profile and the node-wide resource ledger. One backend serves every task
// of a shim that resolves the same configuration.
type backend struct {
	config config.Config
	driver jailhouse.Driver
	board  *partition.Board
	ledger *partition.Ledger
}

// backendKey identifies configurations that open the same backend. Debug
// and Source do not change what is opened.
func backendKey(c config.Config) string {
	return c.Backend + "\x00" + c.StateDir + "\x00" + c.SimDir + "\x00" + c.Board
}

// SimulatorOpener opens the simulated hypervisor whose state lives in dir.
// The binary passes it in (Info.OpenSimulator) so that the shim does not
// import the simulator; nil means the binary has none.
type SimulatorOpener func(dir string) (jailhouse.Driver, error)

// errNoSimulator is what opening backend "sim" fails with in a binary built
// without a SimulatorOpener.
var errNoSimulator = errors.New("this binary has no simulator")

// openBackend opens the driver the configuration selects. With enable set,
// a simulated hypervisor that is not enabled yet is enabled with the
// board's system configuration (real hardware is enabled by the operator);
// `delete` opens without enabling, since a disabled hypervisor has no cells
// left to destroy.
func openBackend(ctx context.Context, cfg config.Config, openSim SimulatorOpener, enable bool) (*backend, error) {
	board, err := partition.LoadBoard(cfg.Board)
	if err != nil {
		return nil, fmt.Errorf("board %q from %s: %w", cfg.Board, cfg.Source, err)
	}
	b := &backend{config: cfg, board: board, ledger: partition.OpenLedger(cfg.LedgerPath())}
	switch cfg.Backend {
	case config.BackendJailhouse:
		dev, err := jailhouse.OpenDevice(jailhouse.DeviceOptions{})
		if err != nil {
			return nil, fmt.Errorf("open the jailhouse driver (backend %q in %s): %w: %w",
				cfg.Backend, cfg.Source, err, errdefs.ErrFailedPrecondition)
		}
		b.driver = dev
		if enable {
			on, err := dev.Enabled()
			if err != nil {
				return nil, fmt.Errorf("read the hypervisor state: %w", err)
			}
			if !on {
				return nil, fmt.Errorf("the jailhouse hypervisor is not enabled on this host; enable it with `jailhouse enable <system config>` before starting partitions: %w",
					errdefs.ErrFailedPrecondition)
			}
		}
	case config.BackendSim:
		if openSim == nil {
			return nil, fmt.Errorf("open the simulator at sim_dir %q (from %s): %w: %w",
				cfg.SimDir, cfg.Source, errNoSimulator, errdefs.ErrFailedPrecondition)
		}
		drv, err := openSim(cfg.SimDir)
		if err != nil {
			return nil, fmt.Errorf("open the simulator at sim_dir %q (from %s): %w", cfg.SimDir, cfg.Source, err)
		}
		b.driver = drv
		if enable {
			if err := enableSimulator(ctx, drv, board); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("no %s on this host; set backend = \"sim\" in %s to use the simulator: %w",
			config.DefaultDevicePath, configFileForHint(cfg), errdefs.ErrFailedPrecondition)
	}
	return b, nil
}

// enableSimulator enables the simulated hypervisor with the board's system
// configuration, encoded by our own encoder, unless it already runs. Two
// shims may race here: the loser's ENABLE fails with EBUSY, which is fine
// as long as the hypervisor is enabled afterwards.
func enableSimulator(ctx context.Context, drv jailhouse.Driver, board *partition.Board) error {
	on, err := drv.Enabled()
	if err != nil {
		return fmt.Errorf("read the simulated hypervisor state: %w", err)
	}
	if on {
		return nil
	}
	blob, err := board.SystemConfig().MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode the system configuration of board %s: %w", board.Name, err)
	}
	if err := drv.Enable(blob); err != nil {
		if on, _ := drv.Enabled(); on && errors.Is(err, unix.EBUSY) {
			return nil
		}
		return fmt.Errorf("enable the simulated hypervisor with board %s: %w", board.Name, err)
	}
	log.G(ctx).WithField("board", board.Name).Info("enabled the simulated hypervisor")
	return nil
}

// configFileForHint names the file a user should edit to pick a backend.
func configFileForHint(cfg config.Config) string {
	if cfg.Source == "" || cfg.Source[0] != '/' {
		return config.DefaultPath
	}
	return cfg.Source
}

// warmBackend opens the default configuration's backend while a new server
// waits for its first request, so that the first partition's Create does
// not pay for the board profile and the driver or simulator (the `prepare`
// phase: 3–5 ms on the simulator, docs/performance.md). The bundle the
// server was started for is its working directory; a container forced onto
// runc by RuntimeAnnotation opens nothing. A failure is left for Create to
// meet again and report: here it is only logged at debug level.
func (s *service) warmBackend(bundle string) {
	if spec, err := readSpec(bundle); err == nil && spec.Annotations[RuntimeAnnotation] == runtimeRunc {
		return
	}
	cfg, err := loadConfig(nil, s.lookup)
	if err != nil {
		log.G(s.ctx).WithError(err).Debug("read the configuration ahead of the first task")
		return
	}
	if _, err := s.backend(cfg); err != nil {
		log.G(s.ctx).WithError(err).Debug("open the backend ahead of the first task")
	}
}
