package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Fanout writes every object to all its stores in parallel. Put returns once
// MinCopies stores hold the object; the remaining copies keep retrying in the
// background until they succeed or the Fanout is closed.
type Fanout struct {
	stores    []Store
	minCopies int
	log       *zap.Logger

	mu      sync.Mutex
	healthy []bool // per store, for logging state changes only

	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc

	// MaxBackoff caps the wait between retries of one store.
	MaxBackoff time.Duration
}

// NewFanout returns a Fanout over stores needing minCopies durable copies.
func NewFanout(stores []Store, minCopies int, log *zap.Logger) *Fanout {
	ctx, cancel := context.WithCancel(context.Background())
	h := make([]bool, len(stores))
	for i := range h {
		h[i] = true
	}
	return &Fanout{stores: stores, minCopies: minCopies, log: log, healthy: h, bgCtx: ctx, bgCancel: cancel, MaxBackoff: 5 * time.Second}
}

// Stores returns the underlying stores in configuration order.
func (f *Fanout) Stores() []Store { return f.stores }

// MinCopies is the number of stores an object must reach to be durable.
func (f *Fanout) MinCopies() int { return f.minCopies }

// source produces a fresh reader for each attempt.
type source func() (io.ReadSeeker, int64, func(), error)

// Put writes data under key.
func (f *Fanout) Put(ctx context.Context, key string, data []byte) error {
	return f.put(ctx, key, func() (io.ReadSeeker, int64, func(), error) {
		return bytes.NewReader(data), int64(len(data)), func() {}, nil
	})
}

// PutFile writes the local file at path under key.
func (f *Fanout) PutFile(ctx context.Context, key, path string) error {
	return f.put(ctx, key, func() (io.ReadSeeker, int64, func(), error) {
		fh, err := os.Open(path)
		if err != nil {
			return nil, 0, nil, err
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil, 0, nil, err
		}
		return fh, st.Size(), func() { fh.Close() }, nil
	})
}

func (f *Fanout) put(ctx context.Context, key string, src source) error {
	done := make(chan error, len(f.stores))
	for i := range f.stores {
		f.bg.Add(1)
		go func() {
			defer f.bg.Done()
			done <- f.putOne(ctx, i, key, src)
		}()
	}
	ok, failed := 0, 0
	var lastErr error
	for range f.stores {
		select {
		case err := <-done:
			if err == nil {
				ok++
			} else {
				failed++
				lastErr = err
			}
		case <-ctx.Done():
			return fmt.Errorf("put %s: %w", key, ctx.Err())
		}
		if ok >= f.minCopies {
			return nil
		}
		if len(f.stores)-failed < f.minCopies {
			return fmt.Errorf("put %s: only %d of the %d required copies succeeded: %w", key, ok, f.minCopies, lastErr)
		}
	}
	return fmt.Errorf("put %s: %w", key, lastErr)
}

// putOne retries one store with exponential backoff until it succeeds, the
// caller's context ends (while the caller still waits for this copy), or
// the Fanout is closed.
func (f *Fanout) putOne(ctx context.Context, i int, key string, src source) error {
	s := f.stores[i]
	backoff := 100 * time.Millisecond
	for {
		r, size, closeFn, err := src()
		if err != nil {
			return fmt.Errorf("open source for %s: %w", key, err)
		}
		err = s.Put(ctx, key, r, size)
		closeFn()
		if err == nil {
			f.setHealthy(i, true, nil)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		f.setHealthy(i, false, err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		case <-f.bgCtx.Done():
			return err
		}
		backoff = min(backoff*2, f.MaxBackoff)
	}
}

// setHealthy logs a store's state changes, not every retry, so that an
// outage produces two lines rather than thousands.
func (f *Fanout) setHealthy(i int, ok bool, err error) {
	f.mu.Lock()
	changed := f.healthy[i] != ok
	f.healthy[i] = ok
	f.mu.Unlock()
	if !changed || f.log == nil {
		return
	}
	if ok {
		f.log.Info("store recovered", zap.String("store", f.stores[i].URL()))
	} else {
		f.log.Warn("store failing; retrying with backoff", zap.String("store", f.stores[i].URL()), zap.Error(err))
	}
}

// Close stops background retries and waits for them.
func (f *Fanout) Close() error {
	f.bgCancel()
	f.bg.Wait()
	var first error
	for _, s := range f.stores {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
