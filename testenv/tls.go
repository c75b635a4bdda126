package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// TLS is a throwaway certificate authority and a server certificate it
// signed for 127.0.0.1 and localhost.
type TLS struct {
	// CAFile is the CA certificate (PEM): sslrootcert= for libpq,
	// AWS_CA_BUNDLE for the AWS SDK.
	CAFile string
	// CertPEM and KeyPEM are the server's certificate and private key.
	CertPEM, KeyPEM []byte
}

// NewTLS makes a CA and a server certificate for 127.0.0.1, ::1 and
// localhost, valid for a day, and writes the CA certificate into dir.
func NewTLS(dir string) (*TLS, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wayback test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("testenv: CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("testenv: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return nil, err
	}
	t := &TLS{
		CAFile:  filepath.Join(dir, "ca.pem"),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	if err := os.WriteFile(t.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, err
	}
	return t, nil
}

// EnableTLS turns on ssl in a running cluster with the certificate of t:
// server.crt and server.key go into the data directory (owned by the
// server's user, as PostgreSQL demands of the key), then ssl = on and a
// configuration reload. Plain connections keep working, so a test can
// check from the server side (pg_stat_ssl) which connections used TLS.
func EnableTLS(ctx context.Context, c *Cluster, t *TLS) error {
	st, err := os.Stat(c.DataDir)
	if err != nil {
		return fmt.Errorf("testenv: enable TLS: %w", err)
	}
	owner, _ := st.Sys().(*syscall.Stat_t)
	for name, b := range map[string][]byte{"server.crt": t.CertPEM, "server.key": t.KeyPEM} {
		p := filepath.Join(c.DataDir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return fmt.Errorf("testenv: enable TLS: %w", err)
		}
		if owner != nil {
			if err := os.Chown(p, int(owner.Uid), int(owner.Gid)); err != nil {
				return fmt.Errorf("testenv: enable TLS: %w", err)
			}
		}
	}
	dsn := c.DSN("postgres")
	if err := Exec(ctx, dsn, "ALTER SYSTEM SET ssl = on"); err != nil {
		return fmt.Errorf("testenv: enable TLS: %w", err)
	}
	if err := Exec(ctx, dsn, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("testenv: enable TLS: %w", err)
	}
	// The reload is asynchronous: wait until new backends see ssl = on.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		rows, err := QueryRows(ctx, dsn, "SHOW ssl")
		if err == nil && len(rows) == 1 && rows[0][0] == "on" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("testenv: enable TLS: ssl is still off 30s after the reload (see the server log %s)", c.LogFile)
}
