package scratch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// DefaultBinDir is where Debian and Ubuntu packages install the PostgreSQL 15
// server programs; it is tried when neither Options.BinDir nor
// $WAYBACK_PG_BIN is set.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// BinDirEnv names the environment variable that selects the server programs,
// so CI machines with PostgreSQL in an unusual place need no code change.
const BinDirEnv = "WAYBACK_PG_BIN"

// DefaultStartTimeout bounds how long a start waits for the server to accept
// connections; a cold CI machine can take a while, a healthy one takes about
// a second.
const DefaultStartTimeout = 60 * time.Second

// Options configure a cluster. The zero value gives a PostgreSQL 15 cluster
// tuned for throwaway tests.
type Options struct {
	// BinDir holds initdb, pg_ctl and postgres. Empty means $WAYBACK_PG_BIN,
	// else /usr/lib/postgresql/15/bin, else what pg_config --bindir names,
	// else the directory of pg_ctl on PATH
	// (symbolic links resolved, so a pg_ctl linked into /usr/local/bin still
	// finds its sibling programs).
	BinDir string

	// Settings are extra postgresql.conf parameters; they override the
	// package's defaults (see DefaultSettings). Values are written quoted, so
	// any value PostgreSQL accepts for the parameter works. "port" is chosen
	// by the package and may not be set here.
	Settings map[string]string

	// Log receives progress and diagnostics; nil discards them.
	Log *zap.Logger

	// TempDir is the directory in which the cluster directory is created.
	// Empty means os.TempDir(). When running as root it must be traversable
	// by the user the server runs as.
	TempDir string

	// StartTimeout bounds each wait for the server to accept connections.
	// Zero means DefaultStartTimeout.
	StartTimeout time.Duration
}

// DefaultSettings returns the postgresql.conf parameters every cluster gets
// unless Options.Settings overrides them. They favour speed over durability
// (the data is thrown away) and enable everything Wayback needs: logical
// decoding, replication connections and slots. A fresh map is returned so
// callers may modify it.
func DefaultSettings() map[string]string {
	return map[string]string{
		"listen_addresses":      "127.0.0.1",
		"wal_level":             "logical",
		"max_wal_senders":       "20",
		"max_replication_slots": "20",
		"fsync":                 "off",
		"synchronous_commit":    "off",
		"full_page_writes":      "off",
		"max_connections":       "100",
		"shared_buffers":        "128MB",
		"log_min_messages":      "warning",
		"logging_collector":     "off",
	}
}

type clusterState int

const (
	stateStopped clusterState = iota
	stateRunning
	stateKilled
	stateClosed
)

// Cluster is one throwaway PostgreSQL cluster. Its exported fields describe
// where it lives so callers can point other tools at it; they are
// informational, and changing them does not affect the cluster. A Cluster is
// safe for concurrent use.
type Cluster struct {
	// Host is the address the server listens on (always 127.0.0.1).
	Host string
	// Port is the TCP port; it stays the same across Stop/Kill and Start.
	Port int
	// Dir is the cluster's private directory, removed by Close. It holds
	// the data directory, the server log and the Unix socket.
	Dir string
	// DataDir is the PostgreSQL data directory (PGDATA), inside Dir.
	DataDir string
	// BinDir holds the server and client programs of the cluster's
	// version; use it to run pg_dump, psql or pgbench that match the server.
	BinDir string
	// LogFile is the server log (stderr of the postmaster).
	LogFile string

	host, dir, dataDir, binDir, logFile string
	log                                 *zap.Logger
	cred                                *syscall.Credential
	startTimeout                        time.Duration

	mu    sync.Mutex
	port  int
	state clusterState
}

// StartCluster creates a new cluster in a fresh temporary directory and
// starts it. The caller owns the cluster and must Close it (tests use
// testenv.NewCluster, which does that automatically). On error nothing is left
// behind, and the error includes the tail of the server log when the server
// itself failed.
func StartCluster(ctx context.Context, opts Options) (*Cluster, error) {
	return startCluster(ctx, opts)
}

func startCluster(ctx context.Context, opts Options) (_ *Cluster, err error) {
	settings := DefaultSettings()
	for k, v := range opts.Settings {
		if !settingName.MatchString(k) {
			return nil, fmt.Errorf("scratch: invalid setting name %q", k)
		}
		if strings.EqualFold(k, "port") {
			return nil, errors.New("scratch: the port setting is chosen by the package and cannot be overridden")
		}
		settings[strings.ToLower(k)] = v
	}

	binDir, err := resolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}

	parent := opts.TempDir
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "wayback-pg-")
	if err != nil {
		return nil, fmt.Errorf("scratch: creating cluster directory: %w", err)
	}
	// Resolve symlinks so that paths written into the server configuration
	// and compared later are canonical.
	if real, rerr := filepath.EvalSymlinks(dir); rerr == nil {
		dir = real
	}
	c := &Cluster{
		host:         "127.0.0.1",
		dir:          dir,
		dataDir:      filepath.Join(dir, "data"),
		binDir:       binDir,
		logFile:      filepath.Join(dir, "postgres.log"),
		log:          log.With(zap.String("cluster", dir)),
		cred:         cred,
		startTimeout: timeout,
		state:        stateStopped,
	}
	c.Host, c.Dir, c.DataDir, c.BinDir, c.LogFile = c.host, c.dir, c.dataDir, c.binDir, c.logFile
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				c.log.Warn("cleaning up after failed start", zap.Error(cerr))
			}
		}
	}()

	// The server user must be able to reach and write its directory; the
	// directory itself is world-traversable so that root-owned parents are
	// the only possible obstacle, which checkTraversable reports clearly.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("scratch: making %s traversable: %w", dir, err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("scratch: handing %s to uid %d: %w", dir, cred.Uid, err)
		}
		if err := checkTraversable(filepath.Dir(dir), cred); err != nil {
			return nil, err
		}
	}

	c.log.Debug("initdb", zap.String("bin_dir", binDir))
	if out, err := c.run(ctx, "initdb",
		"-D", c.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--locale=C", "--no-sync", "--no-instructions"); err != nil {
		return nil, fmt.Errorf("scratch: initdb in %s: %w\n%s", c.dataDir, err, out)
	}
	if err := c.writeFile(filepath.Join(c.dataDir, "pg_hba.conf"), hbaConf); err != nil {
		return nil, err
	}
	if err := c.appendFile(filepath.Join(c.dataDir, "postgresql.conf"),
		"\n# Added by wayback; the file below is rewritten on port changes.\ninclude 'wayback.conf'\n"); err != nil {
		return nil, err
	}

	// Picking a port and binding it later is racy: another process may take
	// the port in between. Retry with a new port when that happens.
	const attempts = 5
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := c.writeFile(filepath.Join(c.dataDir, "wayback.conf"), c.renderConf(settings, port)); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.port, c.Port = port, port
		err = c.startLocked(ctx)
		c.mu.Unlock()
		if err == nil {
			break
		}
		if attempt < attempts && ctx.Err() == nil && c.portConflict() {
			c.log.Info("port taken before the server bound it; retrying", zap.Int("port", port))
			_ = os.Remove(c.logFile)
			continue
		}
		return nil, err
	}
	c.log.Info("cluster started", zap.Int("port", c.port), zap.String("data_dir", c.dataDir))
	return c, nil
}

// DSN returns a libpq/pgx connection URL for dbname as the superuser
// "postgres", e.g. postgres://postgres@127.0.0.1:5433/app?sslmode=disable.
// An empty dbname means the "postgres" database.
func (c *Cluster) DSN(dbname string) string {
	if dbname == "" {
		dbname = "postgres"
	}
	c.mu.Lock()
	port := c.port
	c.mu.Unlock()
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort(c.host, strconv.Itoa(port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// CreateDatabase creates an empty database, so tests can compare a source
// and a restored copy side by side in one cluster.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("scratch: creating database %q: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("scratch: creating database %q: %w", name, err)
	}
	return nil
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast), keeping the data
// for a later Start. Stopping a cluster that is not running is not an error,
// so cleanup paths need not track state.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateClosed:
		return errors.New("scratch: stop: cluster is closed")
	case stateStopped, stateKilled:
		return nil
	}
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "fast", "-w",
		"-t", strconv.Itoa(int(c.startTimeout/time.Second)))
	if err != nil {
		// The server may have died on its own; that is "stopped" too.
		if _, perr := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); errors.Is(perr, fs.ErrNotExist) {
			c.state = stateStopped
			return nil
		}
		return fmt.Errorf("scratch: pg_ctl stop: %w\n%s\nserver log:\n%s", err, out, c.LogTail(20))
	}
	c.state = stateStopped
	c.log.Info("cluster stopped")
	return nil
}

// killWait bounds how long Kill waits for the killed processes to vanish.
const killWait = 30 * time.Second

// Kill simulates a crash: it sends SIGKILL to the postmaster and to every
// process of its process group (the backends and auxiliary processes), then
// waits until they are gone so that Start can bring the cluster up again
// through crash recovery. Killing a killed cluster is a no-op.
//
// With the default synchronous_commit=off, transactions that committed in
// the last few hundred milliseconds before Kill can be lost, exactly as in
// a real crash of such a server. Tests that need every acknowledged commit
// to survive should set synchronous_commit=on (in Options.Settings or per
// session).
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateClosed:
		return errors.New("scratch: kill: cluster is closed")
	case stateKilled:
		return nil
	case stateStopped:
		return errors.New("scratch: kill: cluster is not running")
	}
	pid, err := c.PostmasterPID()
	if err != nil {
		return fmt.Errorf("scratch: kill: %w", err)
	}
	if err := killTree(pid, killWait); err != nil {
		return fmt.Errorf("scratch: kill postmaster %d: %w", pid, err)
	}
	c.state = stateKilled
	c.log.Info("cluster killed", zap.Int("pid", pid))
	return nil
}

// Start starts a stopped or killed cluster again on the same port with the
// same data; after Kill the server performs crash recovery first. Starting a
// running cluster is a no-op.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateClosed:
		return errors.New("scratch: start: cluster is closed")
	case stateRunning:
		return nil
	case stateKilled:
		// Kill verified that every process of the old server is gone, so
		// the lock file is stale. PostgreSQL would usually notice that
		// itself, but not when the old pid has been reused or lingers as
		// an unreaped zombie.
		// The same holds for the Unix socket's lock file.
		for _, f := range []string{
			filepath.Join(c.dataDir, "postmaster.pid"),
			filepath.Join(c.dir, ".s.PGSQL."+strconv.Itoa(c.port)+".lock"),
		} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("scratch: start: removing stale lock file: %w", err)
			}
		}
	}
	if err := c.startLocked(ctx); err != nil {
		return err
	}
	c.log.Info("cluster restarted", zap.Int("port", c.port))
	return nil
}

// Close stops the server without waiting for a clean shutdown (pg_ctl stop
// -m immediate, falling back to SIGKILL) and removes the cluster directory.
// It is idempotent and always tries to remove the files, because a leaked
// cluster in CI costs memory and disk until the machine is recycled.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil
	}
	var errs []error
	if c.state == stateRunning {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "immediate", "-w", "-t", "30")
		cancel()
		if err != nil {
			if pid, perr := c.PostmasterPID(); perr == nil {
				if kerr := killTree(pid, killWait); kerr != nil {
					errs = append(errs, fmt.Errorf("scratch: close: pg_ctl stop: %w (%s); kill: %w",
						err, strings.TrimSpace(string(out)), kerr))
				}
			}
		}
	}
	if c.state == stateKilled || len(errs) > 0 {
		c.removeStaleShmem()
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("scratch: close: removing %s: %w", c.dir, err))
	}
	c.state = stateClosed
	c.log.Debug("cluster closed")
	return errors.Join(errs...)
}

// removeStaleShmem deletes the small System V shared memory segment of a
// killed server. A clean or immediate shutdown removes it, and a restart in
// the same data directory reuses it, but after Kill followed by Close it
// would outlive the cluster; CI machines running many crash tests would
// slowly exhaust the system's segment limit. Best effort, Linux only: the
// segment is removed only when /proc/sysvipc/shm shows the key and id from
// postmaster.pid with nothing attached.
func (c *Cluster) removeStaleShmem() {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	f := strings.Fields(lines[6]) // "key shmid"
	if len(f) != 2 {
		return
	}
	table, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(table), "\n") {
		// key shmid perms size cpid lpid nattch ...
		g := strings.Fields(line)
		if len(g) < 7 || g[0] != f[0] || g[1] != f[1] || g[6] != "0" {
			continue
		}
		out, err := exec.Command("ipcrm", "-m", f[1]).CombinedOutput()
		if err != nil {
			c.log.Warn("removing shared memory segment of killed server",
				zap.String("shmid", f[1]), zap.Error(err), zap.ByteString("output", out))
		}
		return
	}
}

// Bin returns the path of a program in the cluster's BinDir, so callers run
// client tools of the same major version as the server.
func (c *Cluster) Bin(name string) string {
	return filepath.Join(c.binDir, name)
}

// Command prepares a program from BinDir (psql, pg_dump, pgbench, ...) with
// PGHOST, PGPORT, PGUSER and PGSSLMODE pointing at this cluster, so callers
// only pass the database name and tool-specific arguments. It runs as the
// calling user; client programs, unlike the server, do not mind root.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c.mu.Lock()
	port := c.port
	c.mu.Unlock()
	cmd := exec.CommandContext(ctx, c.Bin(name), args...)
	cmd.Env = append(cleanEnv(),
		"PGHOST="+c.host,
		"PGPORT="+strconv.Itoa(port),
		"PGUSER=postgres",
		"PGSSLMODE=disable",
	)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// LogTail returns up to the last n lines of the server log, for error
// messages and failed-test diagnostics. It never fails: problems reading the
// log are described in the returned text.
func (c *Cluster) LogTail(n int) string {
	return tailFile(c.logFile, n)
}

// startLocked runs pg_ctl start and waits for connections. c.mu is held.
func (c *Cluster) startLocked(ctx context.Context) error {
	secs := max(int(c.startTimeout/time.Second), 1)
	out, err := c.run(ctx, "pg_ctl", "start", "-w", "-t", strconv.Itoa(secs),
		"-D", c.dataDir, "-l", c.logFile)
	if err != nil {
		// pg_ctl may have given up while the server is still coming up.
		if pid, perr := c.PostmasterPID(); perr == nil {
			_ = killTree(pid, killWait)
			_ = os.Remove(filepath.Join(c.dataDir, "postmaster.pid"))
		}
		c.state = stateStopped
		return fmt.Errorf("scratch: starting server on port %d: %w\n%s\nserver log (%s):\n%s",
			c.port, err, strings.TrimSpace(string(out)), c.logFile, c.LogTail(30))
	}
	c.state = stateRunning
	if err := c.waitReady(ctx); err != nil {
		return fmt.Errorf("scratch: server on port %d started but does not accept connections: %w\nserver log (%s):\n%s",
			c.port, err, c.logFile, c.LogTail(30))
	}
	return nil
}

// waitReady pings the server until it answers or the start timeout passes.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.startTimeout)
	defer cancel()
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=5",
		net.JoinHostPort(c.host, strconv.Itoa(c.port)))
	var last error
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// portConflict reports whether the last start failed because the port was
// taken.
func (c *Cluster) portConflict() bool {
	tail := c.LogTail(50)
	return strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use")
}

// PostmasterPID returns the server's process id from postmaster.pid.
func (c *Cluster) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("reading postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: bad pid %q", first)
	}
	return pid, nil
}

// run executes a server program as the server user, in the cluster
// directory (the caller's working directory may be unreadable for that
// user), and returns its combined output.
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(cleanEnv(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	// pg_ctl hands stdout/stderr of the postmaster to the log file, so the
	// output pipe closes when pg_ctl exits; WaitDelay guards against a
	// program that leaks it anyway.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	c.log.Debug("running", zap.String("program", name), zap.Strings("args", args))
	err := cmd.Run()
	return out.Bytes(), err
}

// writeFile writes a configuration file readable by the server user.
func (c *Cluster) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("scratch: writing %s: %w", path, err)
	}
	if c.cred != nil {
		if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("scratch: chown %s: %w", path, err)
		}
	}
	return nil
}

func (c *Cluster) appendFile(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("scratch: opening %s: %w", path, err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("scratch: appending to %s: %w", path, err)
	}
	return nil
}

var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

const hbaConf = `# wayback: throwaway cluster, trust everything local.
local   all             all                     trust
local   replication     all                     trust
host    all             all     127.0.0.1/32    trust
host    replication     all     127.0.0.1/32    trust
`

// maxSocketPath is the usable length of sun_path on Linux.
const maxSocketPath = 107

func (c *Cluster) renderConf(settings map[string]string, port int) string {
	all := make(map[string]string, len(settings)+2)
	// The socket lives in the cluster directory so that parallel clusters
	// never clash over /var/run/postgresql; TCP alone is used when the path
	// would be too long for a Unix socket.
	sock := c.dir
	if len(sock)+len("/.s.PGSQL.65535") > maxSocketPath {
		sock = ""
	}
	all["unix_socket_directories"] = sock
	for k, v := range settings {
		all[k] = v
	}
	all["port"] = strconv.Itoa(port)
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by wayback.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, confQuote(all[k]))
	}
	return b.String()
}

// confQuote escapes a value for a single-quoted postgresql.conf string.
func confQuote(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return strings.ReplaceAll(v, `'`, `''`)
}

// cleanEnv is the environment without PG* variables, which would otherwise
// redirect the programs to some other server or data directory.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("scratch: finding a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("scratch: finding a free port: %w", err)
	}
	return port, nil
}

func resolveBinDir(dir string) (string, error) {
	source := "Options.BinDir"
	if dir == "" {
		if env := os.Getenv(BinDirEnv); env != "" {
			dir, source = env, "$"+BinDirEnv
		}
	}
	if dir == "" {
		if _, err := os.Stat(filepath.Join(DefaultBinDir, "pg_ctl")); err == nil {
			dir, source = DefaultBinDir, "default"
		}
	}
	if dir == "" {
		// pg_config names the bin directory of the installation it belongs
		// to, which finds source builds and non-Debian layouts.
		if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
			if d := strings.TrimSpace(string(out)); d != "" {
				if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
					dir, source = d, "pg_config --bindir"
				}
			}
		}
	}
	if dir == "" {
		p, err := exec.LookPath("pg_ctl")
		if err != nil {
			return "", fmt.Errorf("scratch: no PostgreSQL binaries: set --pg-bin (Options.BinDir) or $%s, install PostgreSQL 15 in %s, or put pg_config or pg_ctl on PATH", BinDirEnv, DefaultBinDir)
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir, source = filepath.Dir(p), "PATH"
	}
	for _, prog := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
			return "", fmt.Errorf("scratch: PostgreSQL binaries from %s (%s): %w", source, dir, err)
		}
	}
	return dir, nil
}

// serverCredential returns the identity to run server programs under, or
// nil to run them as the current user. PostgreSQL refuses to run as root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var lastErr error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			lastErr = err
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("scratch: user %s: %w", name, err)
		}
		// An empty Groups list drops root's supplementary groups.
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("scratch: running as root and neither a postgres nor a nobody user exists to run the server as: %w", lastErr)
}

// checkTraversable verifies that the server user can reach dir, so that a
// root-only TMPDIR fails with an explanation instead of an obscure initdb
// error.
func checkTraversable(dir string, cred *syscall.Credential) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("scratch: checking %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			perm := fi.Mode().Perm()
			var can bool
			switch {
			case st.Uid == cred.Uid:
				can = perm&0o100 != 0
			case st.Gid == cred.Gid:
				can = perm&0o010 != 0
			default:
				can = perm&0o001 != 0
			}
			if !can {
				return fmt.Errorf("scratch: %s is not traversable by uid %d, which runs the server because PostgreSQL refuses root; set Options.TempDir (or TMPDIR) to a directory such as /tmp", d, cred.Uid)
			}
		}
		if parent := filepath.Dir(d); parent == d {
			return nil
		}
	}
}

// killTree sends SIGKILL to pid, its children and its process group (pg_ctl
// starts the postmaster as a session leader, so the group is the whole
// server), then waits until none of them is alive.
func killTree(pid int, wait time.Duration) error {
	victims := map[int]bool{pid: true}
	for _, p := range procsMatching(func(ppid, pgrp int) bool { return ppid == pid || pgrp == pid }) {
		victims[p] = true
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // ESRCH when pid leads no group
	for p := range victims {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(wait)
	for {
		var alive []int
		for p := range victims {
			if processAlive(p) {
				alive = append(alive, p)
			}
		}
		for _, p := range procsMatching(func(_, pgrp int) bool { return pgrp == pid }) {
			if !victims[p] && processAlive(p) {
				// Forked between the scan and the signal.
				victims[p] = true
				_ = syscall.Kill(p, syscall.SIGKILL)
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			// Give init a moment to reap the zombies, so that tools
			// probing the old pid with kill(pid, 0) see it gone; do not
			// insist, as some container inits never reap.
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				if !anyExists(victims) {
					break
				}
			}
			return nil
		}
		if time.Now().After(deadline) {
			sort.Ints(alive)
			return fmt.Errorf("processes %v still alive %v after SIGKILL", alive, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// anyExists reports whether any of pids still has a /proc entry, zombie or
// not.
func anyExists(pids map[int]bool) bool {
	for p := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(p)); err == nil {
			return true
		}
	}
	return false
}

// procStat returns state, ppid and pgrp from /proc/PID/stat.
func procStat(pid int) (state byte, ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	// The command name is in parentheses and may contain anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return f[0][0], ppid, pgrp, true
}

// processAlive treats zombies as dead: a killed postmaster is not our child
// and, in containers whose init does not reap, may stay a zombie forever.
func processAlive(pid int) bool {
	if state, _, _, ok := procStat(pid); ok {
		return state != 'Z' && state != 'X'
	}
	if _, err := os.Stat("/proc/self"); err == nil {
		return false // /proc works and the process is gone
	}
	// No /proc: fall back to signal 0.
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func procsMatching(match func(ppid, pgrp int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, pgrp, ok := procStat(p); ok && match(ppid, pgrp) {
			pids = append(pids, p)
		}
	}
	return pids
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return "(empty)"
	}
	lines := strings.Split(s, "\n")
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
