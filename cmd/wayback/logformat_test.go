package main

import (
	"strings"
	"testing"
)

// TestLogFormat: both formats build a logger for every command (they share
// globals.logger), and anything else is refused with what to use.
func TestLogFormat(t *testing.T) {
	for _, f := range []string{"console", "json"} {
		g := &globals{logLevel: "info", logFormat: f}
		log, err := g.logger()
		if err != nil {
			t.Fatalf("--log-format %s: %v", f, err)
		}
		log.Debug("built")
	}
	g := &globals{logLevel: "info", logFormat: "xml"}
	if _, err := g.logger(); err == nil || !strings.Contains(err.Error(), "use console or json") {
		t.Fatalf("--log-format xml: want a refusal naming the choices, got %v", err)
	}
	// Every command inherits the flag from the root.
	root := newRoot()
	for _, c := range root.Commands() {
		if c.Flags().Lookup("log-format") == nil && c.InheritedFlags().Lookup("log-format") == nil {
			t.Errorf("%s has no --log-format", c.Name())
		}
	}
}
