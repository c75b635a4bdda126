// Package crypt encrypts an archive's objects at rest: a store.Store
// wrapper that seals every object with AES-256-GCM in 64 KiB chunks under
// a random per-archive data key (DEK), which is kept on the store itself
// wrapped by a key-encryption key (KEK) the operator holds (a key file or
// an environment variable). The format is in docs/FORMAT.md, operation in
// docs/encryption.md.
//
// Checksums elsewhere in wayback (segment CRCs, manifest SHA-256) are of
// the plaintext: the wrapper is transparent to everything above it, and
// a tampered or truncated ciphertext fails GCM authentication, which reads
// as a corrupt object (ErrAuthentication).
package crypt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the size of every key wayback uses: AES-256.
const KeySize = 32

// Key is a key-encryption key (KEK): 32 secret bytes and an ID derived
// from them. The ID names the key in error messages and on the bucket
// without revealing it.
type Key struct {
	// ID is 16 hex digits: the first 8 bytes of SHA-256("wayback kek" ‖ key).
	ID     string
	secret []byte
}

// KeyID computes a key's ID.
func KeyID(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("wayback kek"))
	h.Write(secret)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// NewKey wraps 32 secret bytes as a Key.
func NewKey(secret []byte) (Key, error) {
	if len(secret) != KeySize {
		return Key{}, fmt.Errorf("a key is %d bytes, got %d", KeySize, len(secret))
	}
	return Key{ID: KeyID(secret), secret: append([]byte(nil), secret...)}, nil
}

// GenerateKey returns a new random key (tests, and `head -c 32
// /dev/urandom` does the same).
func GenerateKey() (Key, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	return NewKey(b)
}

// Secret returns the key's bytes, for writing a key file.
func (k Key) Secret() []byte { return append([]byte(nil), k.secret...) }

// ParseKey reads a key in any of the accepted spellings: exactly 32 raw
// random bytes (32 printable characters are refused as a passphrase), 64 hex digits, or 32 bytes in standard or URL-safe base64 (padded
// or not). Surrounding whitespace (a trailing newline) is ignored for the
// text forms.
func ParseKey(b []byte) (Key, error) {
	if len(b) == KeySize && !printable(b) {
		return NewKey(b)
	}
	s := strings.TrimSpace(string(b))
	if len(s) == 2*KeySize {
		if raw, err := hex.DecodeString(s); err == nil {
			return NewKey(raw)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil && len(raw) == KeySize {
			return NewKey(raw)
		}
	}
	return Key{}, errors.New("not a key: expected 32 raw bytes, 64 hex digits or 32 bytes in base64 (make one with: openssl rand -hex 32)")
}

// printable reports whether b is all printable ASCII: 32 such bytes are a
// passphrase typed into a file, not 32 random bytes (which are all
// printable with probability (95/256)^32, about 1e-14), and are refused
// rather than used as a weak key.
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// LoadKeyFile reads a key file (see ParseKey for the format).
func LoadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("read encryption key file: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return Key{}, fmt.Errorf("encryption key file %s: %w", path, err)
	}
	return k, nil
}

// Keyring is the keys an operator gives: the current key, under which new
// data keys are wrapped, and older keys that still unwrap the data keys of
// objects written before a rotation.
type Keyring struct {
	Current Key
	Old     []Key
}

// Empty reports whether no key is configured (encryption off).
func (r Keyring) Empty() bool { return r.Current.ID == "" }

func (r Keyring) all() []Key {
	if r.Empty() {
		return r.Old
	}
	return append([]Key{r.Current}, r.Old...)
}

func (r Keyring) find(id string) (Key, bool) {
	for _, k := range r.all() {
		if k.ID == id {
			return k, true
		}
	}
	return Key{}, false
}

// IDs lists the configured keys' IDs, current first.
func (r Keyring) IDs() []string {
	var ids []string
	for _, k := range r.all() {
		ids = append(ids, k.ID)
	}
	return ids
}
