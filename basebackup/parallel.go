package basebackup

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// forEach runs work for items 0..n-1 on up to workers goroutines. Each
// worker first opens its own resource (a database connection) with open;
// the first error cancels the rest and is returned.
func forEach[R any](ctx context.Context, workers, n int,
	open func(ctx context.Context, worker int) (R, func(), error),
	work func(ctx context.Context, r R, item int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, release, err := open(ctx, w)
			if err != nil {
				errs <- err
				cancel()
				return
			}
			defer release()
			for i := range items {
				if err := work(ctx, r, i); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case items <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(items)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// dwarfs reports whether a table of size bytes is so much bigger than the
// others (others bytes in all) that, copied or loaded by one connection,
// it would keep going long after the other workers ran out of work: when
// they, sharing the rest, would be busy for less than half of its time.
// Only then does cutting it into parts that several connections work on
// at once pay for what the parts cost:
//
//   - A backup reads a part with COPY (SELECT ... WHERE ctid ...), which
//     costs the server up to twice as much per row as COPY of the whole
//     table (pgbench_accounts on PostgreSQL 15). On the 1 GB bench data,
//     whose pgbench_accounts was one 512 MiB chunk over the line, the
//     backup took 3.9-4.2 s cut and 3.2-3.3 s whole.
//   - A load of parts in parallel gives up COPY FREEZE, so the first scan
//     of the rows, the index build that ends the load, sets their hint
//     bits (pgbench_accounts' primary key took 3.3-3.8 s instead of 2.8 s),
//     and two COPYs into one table on a busy machine were no faster than
//     one.
func dwarfs(size, others int64, workers int) bool {
	return workers > 1 && others/int64(workers-1) < size/2
}

// job is one unit of a load: a table's rows, or an index built on them.
type job struct {
	name string
	// cost estimates the work (bytes to load or index). Among the jobs that
	// are ready, the one heading the costliest chain of jobs waiting on it
	// (its rank) runs first, so that a big table's load, and then its
	// index builds, start early and the workers finish together.
	cost int64
	rank int64 // cost plus the highest rank among then; 0: not yet known
	run  func(ctx context.Context, conn *pgx.Conn) error
	// waits counts the unfinished jobs this one needs; then lists the jobs
	// that need this one.
	waits int
	then  []*job
}

// rankOf returns j's rank, working it out (and its dependents') once.
func (j *job) rankOf() int64 {
	if j.rank == 0 {
		var most int64
		for _, t := range j.then {
			most = max(most, t.rankOf())
		}
		j.rank = j.cost + most + 1 // +1: never 0 once known
	}
	return j.rank
}

// after makes j wait for dep.
func (j *job) after(dep *job) {
	j.waits++
	dep.then = append(dep.then, j)
}

// runJobs runs jobs on up to workers connections (opened with open), each
// job once all it waits for have finished, the costliest ready job first.
// The first error cancels the rest and is returned.
func runJobs(ctx context.Context, log *zap.Logger, workers int, jobs []*job,
	open func(ctx context.Context) (*pgx.Conn, func(), error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		ready   []*job
		pending = len(jobs)
		running int
		failed  error
	)
	for _, j := range jobs {
		if j.waits == 0 {
			ready = append(ready, j)
		}
	}
	// next blocks until a job is ready or nothing is left; nil means stop.
	next := func() *job {
		mu.Lock()
		defer mu.Unlock()
		// With nothing ready and nothing running, nothing will become ready.
		for len(ready) == 0 && pending > 0 && running > 0 && failed == nil {
			cond.Wait()
		}
		if failed != nil || len(ready) == 0 {
			return nil
		}
		best := 0
		for i, j := range ready {
			if j.rankOf() > ready[best].rankOf() {
				best = i
			}
		}
		j := ready[best]
		ready = append(ready[:best], ready[best+1:]...)
		running++
		return j
	}
	finish := func(j *job, err error) {
		mu.Lock()
		defer mu.Unlock()
		if j != nil {
			running--
		}
		if err != nil {
			if failed == nil {
				failed = err
				cancel()
			}
		} else {
			pending--
			for _, t := range j.then {
				if t.waits--; t.waits == 0 {
					ready = append(ready, t)
				}
			}
		}
		cond.Broadcast()
	}
	var wg sync.WaitGroup
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, release, err := open(ctx)
			if err != nil {
				finish(nil, err)
				return
			}
			defer release()
			for j := next(); j != nil; j = next() {
				t := time.Now()
				err := j.run(ctx, conn)
				if log != nil {
					log.Debug("load step done", zap.String("step", j.name), zap.Duration("took", time.Since(t)), zap.Error(err))
				}
				finish(j, err)
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		return failed
	}
	if pending > 0 {
		return fmt.Errorf("%d load steps wait on each other", pending)
	}
	return ctx.Err()
}
