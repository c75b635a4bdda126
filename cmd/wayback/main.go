// Command wayback is point-in-time recovery for PostgreSQL from its
// logical change stream. See README.md and docs/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wayback-pitr/wayback"
	"github.com/wayback-pitr/wayback/config"
	"github.com/wayback-pitr/wayback/crypt"
	"github.com/wayback-pitr/wayback/store"
)

// globals are the flags shared by every subcommand.
type globals struct {
	configPath string
	dsn        string
	slot       string
	pub        string
	stores     []string
	minCopies  int
	flush      string
	logLevel   string
	logFormat  string
	jsonOut    bool
	cpuProfile string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "wayback: "+oneLine(err))
		os.Exit(exitStatus(err))
	}
}

// Exit statuses: supervisors (systemd's RestartPreventExitStatus, scripts)
// tell a failure worth retrying from one that needs a person.
const (
	exitFailure       = 1 // anything else; retrying later may succeed
	exitNeedsOperator = 3 // the agent stopped on something a restart cannot fix
)

func exitStatus(err error) int {
	if errors.Is(err, wayback.ErrNeedsOperator) {
		return exitNeedsOperator
	}
	return exitFailure
}

// oneLine keeps an error on a single line: scripts and on-call engineers
// read the first line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "wayback",
		Short:         "Point-in-time recovery for PostgreSQL from its logical change stream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configPath, "config", "c", "", "YAML config file (see docs/config.md)")
	pf.StringVar(&g.dsn, "dsn", "", "source database DSN (postgres.dsn)")
	pf.StringVar(&g.slot, "slot", "", "replication slot (postgres.slot, default wayback)")
	pf.StringVar(&g.pub, "publication", "", "publication (postgres.publication, default wayback)")
	pf.StringArrayVar(&g.stores, "store", nil, "store URL, repeatable (stores)")
	pf.IntVar(&g.minCopies, "min-copies", 0, "stores that must hold a segment before the slot advances, and must answer the agent at start and backup (min_copies, default all)")
	pf.StringVar(&g.flush, "flush-interval", "", "how often to cut a segment (flush_interval, default 1s)")
	pf.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "console", "console or json")
	pf.BoolVar(&g.jsonOut, "json", false, "machine-readable output on stdout")
	pf.StringVar(&g.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file (for performance work)")
	_ = pf.MarkHidden("cpuprofile")
	var profile *os.File
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.cpuProfile == "" {
			return nil
		}
		f, err := os.Create(g.cpuProfile)
		if err != nil {
			return err
		}
		profile = f
		return pprof.StartCPUProfile(f)
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
	}

	root.AddCommand(setupCmd(g), agentCmd(g), backupCmd(g), listCmd(g), restoreCmd(g), logCmd(g), markCmd(g), undoCmd(g), verifyCmd(g), retentionCmd(g), exportCmd(g), statusCmd(g))
	return root
}

// load builds the configuration: defaults, file, environment, flags.
func (g *globals) load(need config.Need) (config.Config, error) {
	c := config.Defaults()
	if g.configPath != "" {
		if err := config.LoadFile(g.configPath, &c); err != nil {
			return c, err
		}
	}
	if err := config.ApplyEnv(&c, os.LookupEnv); err != nil {
		return c, err
	}
	if g.dsn != "" {
		c.Postgres.DSN = g.dsn
	}
	if g.slot != "" {
		c.Postgres.Slot = g.slot
	}
	if g.pub != "" {
		c.Postgres.Publication = g.pub
	}
	if len(g.stores) > 0 {
		c.Stores = g.stores
	}
	if g.minCopies != 0 {
		c.MinCopies = g.minCopies
	}
	if g.flush != "" {
		var d config.Duration
		if err := config.ParseDurationInto(g.flush, &d); err != nil {
			return c, fmt.Errorf("--flush-interval: %w", err)
		}
		c.FlushInterval = d
	}
	if err := c.Validate(need); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

func (g *globals) logger() (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.Set(g.logLevel); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	var cfg zap.Config
	switch g.logFormat {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		if !isTerminal(os.Stderr) {
			cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
		}
	default:
		return nil, fmt.Errorf("--log-format %q: use console or json", g.logFormat)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	return cfg.Build()
}

// cmdEnv is what a command works with: its configuration, logger and the
// configured stores.
type cmdEnv struct {
	cfg    config.Config
	log    *zap.Logger
	stores []store.Store
}

// openWriter opens the archive for the commands that write to it on their
// own (agent, backup): config, logger and key ring, then the stores, of
// which min_copies must answer; the others are backfilled by the agent
// once they do (docs/operations.md). The caller syncs the logger and
// closes the archive.
func (g *globals) openWriter(ctx context.Context) (config.Config, *zap.Logger, *wayback.Archive, error) {
	cfg, err := g.load(config.Need{DSN: true, Stores: true, Write: true})
	if err != nil {
		return cfg, nil, nil, err
	}
	log, err := g.logger()
	if err != nil {
		return cfg, nil, nil, err
	}
	ring, err := loadKeys(cfg.Encryption, os.LookupEnv)
	if err == nil {
		var arc *wayback.Archive
		arc, err = wayback.Open(ctx, wayback.ArchiveOptions{Stores: cfg.Stores, Check: true, Write: true, Keys: ring, MinReachable: cfg.MinCopies, Log: log})
		if err == nil {
			return cfg, log, arc, nil
		}
	}
	_ = log.Sync()
	return cfg, nil, nil, err
}

// open loads the configuration, builds the logger and, when the command
// needs stores, opens them (checked before use when it writes).
func (g *globals) open(ctx context.Context, need config.Need) (*cmdEnv, error) {
	cfg, err := g.load(need)
	if err != nil {
		return nil, err
	}
	log, err := g.logger()
	if err != nil {
		return nil, err
	}
	e := &cmdEnv{cfg: cfg, log: log}
	if need.Stores {
		if e.stores, err = openStores(ctx, cfg.Stores, log, need.Write); err != nil {
			return nil, err
		}
		ring, err := loadKeys(cfg.Encryption, os.LookupEnv)
		if err == nil {
			var wrapped []store.Store
			wrapped, err = crypt.Wrap(ctx, e.stores, crypt.Options{Keys: ring, Write: need.Write, Log: log})
			if err == nil {
				e.stores = wrapped
			}
		}
		if err != nil {
			closeAll(e.stores)
			return nil, err
		}
	}
	return e, nil
}

// archive is the command's stores as the Go API's Archive: every command
// runs through package wayback, as embedding programs do.
func (e *cmdEnv) archive() *wayback.Archive { return wayback.NewArchive(e.stores, e.log) }

// close releases the stores and flushes the log.
func (e *cmdEnv) close() {
	closeAll(e.stores)
	e.log.Sync()
}

// openStores opens every configured store. With check, every store must
// also answer (all are checked at once, each for at most
// store.CheckTimeout) before any data is touched, so a wrong bucket or
// credential fails at once with its cause; when any does not, it fails
// with a *storesDownError naming each (retention, which needs them all;
// the agent and backup check through wayback.Open, with min_copies).
// Readers (list, restore, verify) skip the check: any one store is enough,
// and an unreachable one is reported rather than fatal.
func openStores(ctx context.Context, urls []string, log *zap.Logger, check bool) ([]store.Store, error) {
	var out []store.Store
	for _, u := range urls {
		s, err := store.Open(ctx, u, log)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, s)
	}
	if !check {
		return out, nil
	}
	errs := store.CheckAll(ctx, out, store.CheckTimeout)
	if err := ctx.Err(); err != nil {
		closeAll(out)
		return nil, err
	}
	down := &storesDownError{of: len(out)}
	for i, err := range errs {
		if err != nil {
			down.urls = append(down.urls, out[i].URL())
			down.errs = append(down.errs, err)
		}
	}
	if len(down.urls) > 0 {
		closeAll(out)
		return nil, down
	}
	return out, nil
}

// storesDownError names the stores that did not answer a command that
// needs every store.
type storesDownError struct {
	of   int // stores configured
	urls []string
	errs []error
}

// stores says which stores did not answer, and why, on one line.
func (e *storesDownError) stores() string {
	return fmt.Sprintf("%d of %d stores did not answer (%s)", len(e.urls), e.of, store.Failures(e.urls, e.errs))
}

func (e *storesDownError) Error() string {
	return "this command needs every store, and " + e.stores() + ", so nothing was written. Run it again when every store answers"
}

func (e *storesDownError) Unwrap() []error { return e.errs }

// loadKeys reads the encryption keys the configuration names; none set
// gives an empty keyring (encryption off).
func loadKeys(c config.Encryption, lookup func(string) (string, bool)) (crypt.Keyring, error) {
	var ring crypt.Keyring
	switch {
	case c.KeyFile != "":
		k, err := crypt.LoadKeyFile(c.KeyFile)
		if err != nil {
			return ring, fmt.Errorf("encryption.key_file: %w", err)
		}
		ring.Current = k
	case c.KeyEnv != "":
		v, ok := lookup(c.KeyEnv)
		if !ok || v == "" {
			return ring, fmt.Errorf("encryption.key_env names %s, which is not set: export the key (hex or base64) in it", c.KeyEnv)
		}
		k, err := crypt.ParseKey([]byte(v))
		if err != nil {
			return ring, fmt.Errorf("encryption.key_env %s: %w", c.KeyEnv, err)
		}
		ring.Current = k
	}
	for _, f := range c.OldKeyFiles {
		k, err := crypt.LoadKeyFile(f)
		if err != nil {
			return ring, fmt.Errorf("encryption.old_key_files: %w", err)
		}
		ring.Old = append(ring.Old, k)
	}
	return ring, nil
}

func closeAll(ss []store.Store) {
	for _, s := range ss {
		s.Close()
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress is progress(log), silenced under --json so that stdout and
// stderr carry only the machine-readable result and errors.
func (g *globals) progress(log *zap.Logger) func(format string, args ...any) {
	if g.jsonOut {
		return func(string, ...any) {}
	}
	return progress(log)
}

// progress prints human progress lines on a terminal and structured log
// lines otherwise.
func progress(log *zap.Logger) func(format string, args ...any) {
	tty := isTerminal(os.Stderr)
	return func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if tty {
			fmt.Fprintln(os.Stderr, msg)
		} else {
			log.Info(strings.TrimSpace(msg))
		}
	}
}
