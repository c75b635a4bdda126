// Package examples shows wayback's Go API in use. Its tests are runnable
// documentation: a restore drill of the kind users put in their CI, run
// against a real, throwaway PostgreSQL 15 cluster with the archive in two
// local stores.
package examples
