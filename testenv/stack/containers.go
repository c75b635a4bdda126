//go:build containers

package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/wayback-pitr/wayback/testenv"
)

// Fixed inside the containers; the host reaches them through mapped ports.
const (
	pgPassword  = "wayback"
	s3Port      = "9000"
	gcsPort     = "4443"
	archiveRoot = "archive"
	bucket      = "wayback"
	// logTail is how many lines of each container's output Logs keeps.
	logTail = 80
)

// containers is the Containers mode: the source database, one teststores
// container per store (so that pausing one cuts off only that store) on a
// private network, and the agent as a sidecar in the database container's
// network namespace, reaching the database at 127.0.0.1 as in a Kubernetes
// pod. With NetworkHost the database and stores listen on free loopback
// ports of the host's namespace instead of a private network. Containers are removed by close, not by testcontainers'
// reaper: Ryuk is an image from a registry, which these machines lack.
type containers struct {
	t    testing.TB
	o    Options
	host bool // NetworkHost
	cli  *testcontainers.DockerClient
	net  *testcontainers.DockerNetwork
	pg   *pgContainer
	// stores[0] serves S3, stores[1] GCS; inner are their URLs as the
	// agent (on the private network) reaches them, outer as the test
	// process does (through mapped ports).
	stores       [2]*testcontainers.DockerContainer
	inner, outer []string

	mu    sync.Mutex
	dsn   string // changes when the database container restarts (new host port)
	agent *testcontainers.DockerContainer
	extra []*pgContainer
	// gone keeps the output of containers already removed (a stopped
	// agent), for Logs.
	gone []string
}

func startContainers(ctx context.Context, t testing.TB, o Options) (_ backend, err error) {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, fmt.Errorf("container mode: connect to Docker (is it running? DOCKER_HOST?): %w", err)
	}
	for _, img := range []string{o.PostgresImage, o.WaybackImage, o.TestStoresImage} {
		if _, err := cli.ImageInspect(ctx, img); err != nil {
			cli.Close()
			return nil, fmt.Errorf("container mode: image %s is not on this machine, and the stack never pulls: run make images, or docker pull/build it (and set WAYBACK_POSTGRES_IMAGE, WAYBACK_IMAGE, WAYBACK_TESTSTORES_IMAGE): %w", img, err)
		}
	}
	c := &containers{t: t, o: o, cli: cli, host: o.Network == NetworkHost}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\ncontainer output:\n%s", err, c.logs(context.Background()))
			c.close(context.Background())
		}
	}()
	if !c.host {
		if c.net, err = network.New(ctx, network.WithLabels(c.labels())); err != nil {
			return nil, fmt.Errorf("container mode: create a network: %w", err)
		}
	}
	if c.pg, err = c.runPostgres(ctx, o.Database, c.net); err != nil {
		return nil, fmt.Errorf("container mode: start the source database: %w", err)
	}
	if err := c.refreshDSN(ctx); err != nil {
		return nil, err
	}
	if err := c.waitPostgres(ctx, c.sourceDSN()); err != nil {
		return nil, fmt.Errorf("container mode: the source database: %w", err)
	}
	for i, kind := range []string{"s3", "gcs"} {
		port := map[string]string{"s3": s3Port, "gcs": gcsPort}[kind]
		listen := ":" + port
		opts := []testcontainers.ContainerCustomizer{
			testcontainers.WithLabels(c.labels()),
			testcontainers.WithWaitStrategyAndDeadline(time.Minute, wait.ForLog("ready")),
		}
		if c.host {
			p, err := freePort()
			if err != nil {
				return nil, err
			}
			port = fmt.Sprint(p)
			listen = "127.0.0.1:" + port
			opts = append(opts, hostNetwork())
		} else {
			opts = append(opts, network.WithNetwork([]string{kind}, c.net), testcontainers.WithExposedPorts(port+"/tcp"))
		}
		args := []string{"-s3=", "-gcs=", "-bucket", bucket}
		if kind == "s3" {
			args[0] = "-s3=" + listen
		} else {
			args[1] = "-gcs=" + listen
		}
		st, err := testcontainers.Run(ctx, o.TestStoresImage, append(opts, testcontainers.WithCmd(args...))...)
		if st != nil {
			c.stores[i] = st
		}
		if err != nil {
			return nil, fmt.Errorf("container mode: start the %s store: %w", kind, err)
		}
		if c.host {
			ep := "http://127.0.0.1:" + port
			c.inner = append(c.inner, storeURL(kind, ep))
			c.outer = append(c.outer, storeURL(kind, ep))
			continue
		}
		ip, err := st.ContainerIP(ctx)
		if err != nil {
			return nil, fmt.Errorf("container mode: the %s store's address: %w", kind, err)
		}
		ep, err := st.PortEndpoint(ctx, port+"/tcp", "http")
		if err != nil {
			return nil, fmt.Errorf("container mode: the %s store's host port: %w", kind, err)
		}
		c.inner = append(c.inner, storeURL(kind, "http://"+ip+":"+port))
		c.outer = append(c.outer, storeURL(kind, ep))
	}
	return c, nil
}

// storeURL is the archive's URL on one teststores container.
func storeURL(kind, endpoint string) string {
	q := url.Values{}
	q.Set("endpoint", endpoint)
	scheme := "gs"
	if kind == "s3" {
		scheme = "s3"
		q.Set("region", testenv.S3Region)
		q.Set("path_style", "true")
		q.Set("access_key_id", testenv.S3DefaultAccessKeyID)
		q.Set("secret_access_key", testenv.S3DefaultSecretAccessKey)
	}
	u := url.URL{Scheme: scheme, Host: bucket, Path: "/" + archiveRoot, RawQuery: q.Encode()}
	return u.String()
}

// labels mark the stack's containers, so that leftovers of a killed test
// run can be found: docker ps -a --filter label=wayback.testenv.stack.
func (c *containers) labels() map[string]string {
	return map[string]string{"wayback.testenv.stack": c.t.Name()}
}

// pgContainer is a PostgreSQL container and the port it listens on: 5432
// in its own namespace (bridge) or a free loopback port (host).
type pgContainer struct {
	*testcontainers.DockerContainer
	port int
	host bool
}

// dsn is the DSN of database db as the test process reaches it.
func (p *pgContainer) dsn(ctx context.Context, db string) (string, error) {
	ep := fmt.Sprintf("127.0.0.1:%d", p.port)
	if !p.host {
		var err error
		if ep, err = p.PortEndpoint(ctx, "5432/tcp", ""); err != nil {
			return "", fmt.Errorf("the database container's host port: %w", err)
		}
	}
	return pgURL(ep, db), nil
}

func pgURL(hostPort, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", pgPassword), Host: hostPort, Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// hostNetwork runs a container in the host's network namespace.
func hostNetwork() testcontainers.CustomizeRequestOption {
	return testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) { hc.NetworkMode = "host" })
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// runPostgres starts a PostgreSQL container with wal_level=logical,
// attached to nw when it is not nil. The -c flags make the official
// postgres image work as it is (the local image sets them in its
// configuration too). Readiness is checked with a real connection
// (waitPostgres), not by testcontainers: Docker's port proxy accepts
// connections before PostgreSQL does.
func (c *containers) runPostgres(ctx context.Context, db string, nw *testcontainers.DockerNetwork) (*pgContainer, error) {
	env := map[string]string{"POSTGRES_PASSWORD": pgPassword, "POSTGRES_DB": db}
	cmd := []string{"postgres", "-c", "wal_level=logical", "-c", "max_wal_senders=10", "-c", "max_replication_slots=10"}
	opts := []testcontainers.ContainerCustomizer{testcontainers.WithLabels(c.labels())}
	p := &pgContainer{port: 5432, host: c.host}
	if c.host {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p.port = port
		// PGPORT too: the images' entrypoints run a first server for
		// initialization, which must not take the host's 5432 either.
		env["PGPORT"] = fmt.Sprint(port)
		cmd = append(cmd, "-c", fmt.Sprintf("port=%d", port), "-c", "listen_addresses=127.0.0.1")
		opts = append(opts, hostNetwork())
	} else {
		opts = append(opts, testcontainers.WithExposedPorts("5432/tcp"))
		if nw != nil {
			opts = append(opts, network.WithNetwork([]string{"postgres"}, nw))
		}
	}
	opts = append(opts, testcontainers.WithEnv(env), testcontainers.WithCmd(cmd...))
	ctr, err := testcontainers.Run(ctx, c.o.PostgresImage, opts...)
	if err != nil {
		if ctr != nil {
			c.keepLogs("failed postgres", ctr)
			_ = ctr.Terminate(context.Background())
		}
		return nil, err
	}
	p.DockerContainer = ctr
	return p, nil
}

func (c *containers) refreshDSN(ctx context.Context) error {
	dsn, err := c.pg.dsn(ctx, c.o.Database)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.dsn = dsn
	c.mu.Unlock()
	return nil
}

// waitPostgres waits until dsn accepts a query: the official image (and
// ours) first runs a server for initialization that listens on no TCP
// port, then restarts it.
func (c *containers) waitPostgres(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			if !c.host {
				return fmt.Errorf("not accepting connections after 2 minutes (if this process cannot reach Docker's published ports at all, try WAYBACK_TESTENV_NETWORK=host): %w", last)
			}
			return fmt.Errorf("not accepting connections after 2 minutes: %w", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *containers) sourceDSN() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dsn
}

func (c *containers) storeURLs() []string { return append([]string(nil), c.outer...) }

// startAgent runs the wayback image in the database container's network
// namespace, configured through WAYBACK_* variables as a pod would.
func (c *containers) startAgent(ctx context.Context, o Options) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent != nil {
		return errors.New("the agent is already running")
	}
	env := map[string]string{
		"WAYBACK_POSTGRES_DSN":         pgURL(fmt.Sprintf("127.0.0.1:%d", c.pg.port), o.Database),
		"WAYBACK_POSTGRES_SLOT":        "wayback",
		"WAYBACK_POSTGRES_PUBLICATION": "wayback",
		"WAYBACK_POSTGRES_BIN_DIR":     "/usr/lib/postgresql/15/bin",
		"WAYBACK_STORES":               strings.Join(c.inner, " "),
		"WAYBACK_MIN_COPIES":           fmt.Sprint(o.MinCopies),
		"WAYBACK_FLUSH_INTERVAL":       o.FlushInterval.String(),
	}
	pgID := c.pg.GetContainerID()
	ag, err := testcontainers.Run(ctx, o.WaybackImage,
		testcontainers.WithEnv(env),
		testcontainers.WithCmd("agent", "--repair-interval", o.RepairInterval.String()),
		testcontainers.WithLabels(c.labels()),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.NetworkMode = container.NetworkMode("container:" + pgID)
		}),
	)
	if err != nil {
		if ag != nil {
			c.keepLogsLocked("failed agent", ag)
			_ = ag.Terminate(context.Background())
		}
		return fmt.Errorf("run the wayback sidecar (%s): %w", o.WaybackImage, err)
	}
	c.agent = ag
	return nil
}

func (c *containers) stopAgent(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return nil
	}
	ag := c.agent
	c.agent = nil
	timeout := 10 * time.Second
	err := ag.Stop(ctx, &timeout)
	c.keepLogsLocked("agent (stopped)", ag)
	if terr := ag.Terminate(context.WithoutCancel(ctx)); err == nil {
		err = terr
	}
	return err
}

func (c *containers) killDatabase(ctx context.Context) error {
	if _, err := c.cli.ContainerKill(ctx, c.pg.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kill the database container: %w", err)
	}
	// Wait until Docker has seen it exit, or Start below races the kill.
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.pg.State(ctx)
		if err != nil {
			return fmt.Errorf("the killed database container's state: %w", err)
		}
		if !st.Running {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the database container still runs a minute after SIGKILL")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startDatabase starts the killed database container again. It gets a new
// network namespace (and host port), so the agent's sidecar, whose network
// is the old one's, is restarted into it: in a pod the kubelet restarts
// both, since they share one sandbox.
func (c *containers) startDatabase(ctx context.Context) error {
	if err := c.pg.Start(ctx); err != nil {
		return fmt.Errorf("start the database container again: %w", err)
	}
	if err := c.refreshDSN(ctx); err != nil {
		return err
	}
	if err := c.waitPostgres(ctx, c.sourceDSN()); err != nil {
		return fmt.Errorf("the restarted database: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return nil
	}
	timeout := 10 * time.Second
	if err := c.agent.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("stop the agent's sidecar: %w", err)
	}
	if err := c.agent.Start(ctx); err != nil {
		return fmt.Errorf("restart the agent's sidecar in the database's new network namespace: %w", err)
	}
	return nil
}

func (c *containers) store(i int) (string, error) {
	if i < 0 || i >= len(c.stores) || c.stores[i] == nil {
		return "", fmt.Errorf("no store %d (0 is S3, 1 is GCS)", i)
	}
	return c.stores[i].GetContainerID(), nil
}

// pauseStore freezes the store's container: connections to it stay open
// and requests hang, as when a network drops packets.
func (c *containers) pauseStore(ctx context.Context, i int) error {
	id, err := c.store(i)
	if err != nil {
		return err
	}
	if _, err := c.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("pause store %d's container: %w", i, err)
	}
	return nil
}

func (c *containers) resumeStore(ctx context.Context, i int) error {
	id, err := c.store(i)
	if err != nil {
		return err
	}
	if _, err := c.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("resume store %d's container: %w", i, err)
	}
	return nil
}

// newDatabase starts a fresh, empty PostgreSQL container to restore into.
// Database name does not exist in it yet (its default database is
// "postgres").
func (c *containers) newDatabase(ctx context.Context, t testing.TB, name string) (string, error) {
	ctr, err := c.runPostgres(ctx, "postgres", nil)
	if err != nil {
		return "", fmt.Errorf("start a database container to restore into: %w", err)
	}
	c.mu.Lock()
	c.extra = append(c.extra, ctr)
	c.mu.Unlock()
	admin, err := ctr.dsn(ctx, "postgres")
	if err != nil {
		return "", err
	}
	if err := c.waitPostgres(ctx, admin); err != nil {
		return "", fmt.Errorf("the database container to restore into: %w", err)
	}
	return ctr.dsn(ctx, name)
}

// containerLogs returns the last logTail lines of ctr's output.
func containerLogs(ctx context.Context, ctr *testcontainers.DockerContainer) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no logs: %v)", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTail {
		lines = append([]string{fmt.Sprintf("(%d earlier lines left out)", len(lines)-logTail)}, lines[len(lines)-logTail:]...)
	}
	out := strings.Join(lines, "\n")
	if err != nil {
		out += fmt.Sprintf("\n(reading logs: %v)", err)
	}
	return out
}

func (c *containers) keepLogs(what string, ctr *testcontainers.DockerContainer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keepLogsLocked(what, ctr)
}

func (c *containers) keepLogsLocked(what string, ctr *testcontainers.DockerContainer) {
	c.gone = append(c.gone, fmt.Sprintf("--- %s %.12s ---\n%s\n", what, ctr.GetContainerID(), containerLogs(context.Background(), ctr)))
}

func (c *containers) logs(ctx context.Context) string {
	var b bytes.Buffer
	add := func(what string, ctr *testcontainers.DockerContainer) {
		if ctr != nil {
			fmt.Fprintf(&b, "--- %s %.12s ---\n%s\n", what, ctr.GetContainerID(), containerLogs(ctx, ctr))
		}
	}
	if c.pg != nil {
		add("postgres (source)", c.pg.DockerContainer)
	}
	add("teststores S3", c.stores[0])
	add("teststores GCS", c.stores[1])
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.gone {
		b.WriteString(g)
	}
	add("agent sidecar", c.agent)
	for i, ctr := range c.extra {
		add(fmt.Sprintf("postgres (restore target %d)", i+1), ctr.DockerContainer)
	}
	return b.String()
}

func (c *containers) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := c.stopAgent(ctx); err != nil {
		c.t.Logf("stack: stop the agent: %v", err)
	}
	terminate := func(ctr *testcontainers.DockerContainer) {
		if ctr == nil {
			return
		}
		// A paused container cannot be stopped.
		_, _ = c.cli.ContainerUnpause(ctx, ctr.GetContainerID(), client.ContainerUnpauseOptions{})
		if err := ctr.Terminate(ctx); err != nil {
			c.t.Logf("stack: remove container %.12s: %v", ctr.GetContainerID(), err)
		}
	}
	c.mu.Lock()
	extra := c.extra
	c.extra = nil
	c.mu.Unlock()
	for _, ctr := range extra {
		terminate(ctr.DockerContainer)
	}
	for _, ctr := range c.stores {
		terminate(ctr)
	}
	if c.pg != nil {
		terminate(c.pg.DockerContainer)
	}
	if c.net != nil {
		if err := c.net.Remove(ctx); err != nil {
			c.t.Logf("stack: remove network %s: %v", c.net.Name, err)
		}
	}
	c.cli.Close()
}
