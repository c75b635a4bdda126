package basebackup

import (
	"context"
	"sync"
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
