package store_test

import (
	"testing"

	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/store/storetest"
)

func TestFileConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewFile(t.TempDir()) })
}
