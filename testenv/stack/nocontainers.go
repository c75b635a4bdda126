//go:build !containers

package stack

import (
	"context"
	"errors"
	"testing"
)

// startContainers is a stub: container mode links testcontainers-go and
// Docker's client, which plain `go test ./...` must not need.
func startContainers(context.Context, testing.TB, Options) (backend, error) {
	return nil, errors.New("container mode needs the containers build tag: go test -tags containers (and the images from make images), or set WAYBACK_TESTENV=local")
}
