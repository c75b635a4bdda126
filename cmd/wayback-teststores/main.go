// Command wayback-teststores serves an S3-compatible store (gofakes3) and a
// GCS-compatible store (fake-gcs-server), both in memory, for container-mode
// restore drills: it is what the wayback-teststores image runs, so tests need
// no MinIO or emulator image from a registry. Access keys are testenv's
// defaults (S3DefaultAccessKeyID / S3DefaultSecretAccessKey); the GCS side
// checks no credentials.
//
//	wayback-teststores -s3 :9000 -gcs :4443 -bucket wayback
//
// Being a test server it keeps everything in memory: objects are lost when
// it stops (pausing the container keeps them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wayback-pitr/wayback/testenv"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "wayback-teststores:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("wayback-teststores", flag.ContinueOnError)
	s3Addr := fs.String("s3", ":9000", `S3 listen address ("" to serve no S3)`)
	gcsAddr := fs.String("gcs", ":4443", `GCS listen address ("" to serve no GCS)`)
	buckets := fs.String("bucket", "wayback", "comma-separated buckets to create in both stores")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *s3Addr == "" && *gcsAddr == "" {
		return errors.New("nothing to serve: give -s3 or -gcs an address such as :9000")
	}
	var names []string
	for _, b := range strings.Split(*buckets, ",") {
		if b = strings.TrimSpace(b); b != "" {
			names = append(names, b)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *s3Addr != "" {
		s3, err := testenv.StartS3(ctx, testenv.S3Options{Listen: *s3Addr, Buckets: names})
		if err != nil {
			return fmt.Errorf("start S3 on %s: %w", *s3Addr, err)
		}
		defer s3.Close()
		fmt.Printf("s3 listening on %s (access key %s)\n", *s3Addr, s3.AccessKeyID())
	}
	if *gcsAddr != "" {
		gcs, err := testenv.StartGCS(ctx, testenv.GCSOptions{Listen: *gcsAddr, Buckets: names})
		if err != nil {
			return fmt.Errorf("start GCS on %s: %w", *gcsAddr, err)
		}
		defer gcs.Close()
		fmt.Printf("gcs listening on %s\n", *gcsAddr)
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
