package crypt

import (
	"bufio"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/store"
)

// KeyPrefix is where each store keeps the archive's wrapped data keys,
// one object per data key: keys/<KEK id>-<DEK id>.json. They are never
// overwritten (names are unique), so two writers starting at once on an
// empty archive each keep their own key and no object becomes unreadable.
const KeyPrefix = "keys/"

// keyObject is a wrapped data key as stored on the bucket.
type keyObject struct {
	Format  string    `json:"format"`  // "wayback-key"
	Version int       `json:"version"` // 1
	KEKID   string    `json:"kek_id"`
	DEKID   string    `json:"dek_id"`
	Created time.Time `json:"created"`
	// Wrapped is base64 of a 12-byte random nonce followed by
	// AES-256-GCM(KEK, DEK) with additional data "wayback dek <dek_id>".
	Wrapped string `json:"wrapped"`
}

func keyObjectKey(kekID, dekID string) string { return KeyPrefix + kekID + "-" + dekID + ".json" }

// MissingKeyError says the archive is encrypted and no key was given.
type MissingKeyError struct {
	// KeyIDs are the IDs of the keys the archive's data keys are wrapped by.
	KeyIDs []string
}

func (e *MissingKeyError) Error() string {
	return fmt.Sprintf("archive is encrypted (key id %s); give the key with encryption.key_file or WAYBACK_ENCRYPTION_KEY_FILE (or encryption.key_env)",
		strings.Join(e.KeyIDs, ", "))
}

// WrongKeyError says none of the configured keys unwraps any of the
// archive's data keys.
type WrongKeyError struct {
	// KeyIDs are the archive's key IDs; Given the configured ones.
	KeyIDs, Given []string
}

func (e *WrongKeyError) Error() string {
	return fmt.Sprintf("archive is encrypted with key id %s, but the configured key has id %s: give the archive's key with encryption.key_file (keys current before a rotation go in encryption.old_key_files)",
		strings.Join(e.KeyIDs, ", "), strings.Join(e.Given, ", "))
}

// Options configure Wrap.
type Options struct {
	// Keys are the operator's keys; empty means encryption is off.
	Keys Keyring
	// Write: the caller writes objects (agent, backup). Wrap then makes sure
	// a data key wrapped by the current key exists (creating one on a new
	// archive or after a rotation) and that every store holds every key
	// object, and fails when a store cannot be read.
	Write bool
	// Log receives key creation and rotation events; nil discards them.
	Log *zap.Logger
	// Down marks, by index, stores that did not answer (an agent starting
	// during an outage). Wrap neither reads nor writes them, but wraps them
	// all the same; a writer copies the key objects to each with SyncKeys
	// once it answers. Because a down store may hold the archive's current
	// data key, Wrap never creates a data key while a store is down.
	Down []bool
}

// DataKeyUnavailableError says that a writer needs a data key wrapped by
// the current key, no reachable store holds one, and some store did not
// answer: that store may hold it, so none is created.
type DataKeyUnavailableError struct {
	// KeyID is the current key's ID; Down the stores that did not answer.
	KeyID string
	Down  []string
}

func (e *DataKeyUnavailableError) Error() string {
	return fmt.Sprintf("no reachable store holds a data key wrapped by encryption key %s, and %s did not answer: it may hold the archive's current data key, so no new one is created (a new archive and a key rotation need every store). Start again when it answers",
		e.KeyID, strings.Join(e.Down, ", "))
}

// Wrap prepares the archive's stores for encryption. With no keys, it
// returns the stores unchanged, unless they hold an encrypted archive:
// then it fails with a MissingKeyError, before anything is read. With
// keys, it returns the stores wrapped so that every object (except the
// key objects) is encrypted on Put and decrypted on Get.
func Wrap(ctx context.Context, stores []store.Store, o Options) ([]store.Store, error) {
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	kr := &keyring{deks: map[[8]byte]cipher.AEAD{}, kekOf: map[string]string{}}
	raw := map[string][]byte{} // key object name -> bytes, from any store
	held := make([]map[string]bool, len(stores))
	archiveKEKs := map[string]bool{}
	var down []string
	isDown := func(i int) bool { return i < len(o.Down) && o.Down[i] }
	for i, s := range stores {
		if isDown(i) {
			down = append(down, s.URL())
			continue
		}
		objs, err := s.List(ctx, KeyPrefix)
		if err != nil {
			if o.Write {
				return nil, fmt.Errorf("list encryption keys in %s: %w", s.URL(), err)
			}
			log.Warn("cannot list encryption keys", zap.String("store", s.URL()), zap.Error(err))
			continue
		}
		held[i] = map[string]bool{}
		for _, obj := range objs {
			held[i][obj.Key] = true
			if _, ok := raw[obj.Key]; ok {
				continue
			}
			b, err := store.ReadAll(ctx, s, obj.Key)
			if err != nil {
				if o.Write {
					return nil, fmt.Errorf("read encryption key %s: %w", obj.Key, err)
				}
				log.Warn("cannot read encryption key", zap.String("store", s.URL()), zap.String("key", obj.Key), zap.Error(err))
				continue
			}
			raw[obj.Key] = b
		}
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names)
	var current []string // DEK IDs wrapped by the current key
	for _, name := range names {
		var ko keyObject
		if err := json.Unmarshal(raw[name], &ko); err != nil || ko.Format != "wayback-key" {
			return nil, fmt.Errorf("encryption key object %s is not a wayback key: %v", name, err)
		}
		if ko.Version != 1 {
			return nil, fmt.Errorf("encryption key object %s has version %d, newer than this wayback knows: upgrade wayback", name, ko.Version)
		}
		archiveKEKs[ko.KEKID] = true
		kr.kekOf[ko.DEKID] = ko.KEKID
		kek, ok := o.Keys.find(ko.KEKID)
		if !ok {
			continue
		}
		dek, err := unwrapDEK(kek, ko)
		if err != nil {
			return nil, fmt.Errorf("encryption key object %s: %w", name, err)
		}
		id, aead, err := dekAEAD(ko.DEKID, dek)
		if err != nil {
			return nil, fmt.Errorf("encryption key object %s: %w", name, err)
		}
		kr.deks[id] = aead
		if kek.ID == o.Keys.Current.ID {
			current = append(current, ko.DEKID)
		}
	}
	kekIDs := make([]string, 0, len(archiveKEKs))
	for id := range archiveKEKs {
		kekIDs = append(kekIDs, id)
	}
	sort.Strings(kekIDs)

	if o.Keys.Empty() {
		if len(kekIDs) > 0 {
			return nil, &MissingKeyError{KeyIDs: kekIDs}
		}
		return stores, nil
	}
	if len(kekIDs) > 0 && len(kr.deks) == 0 {
		return nil, &WrongKeyError{KeyIDs: kekIDs, Given: o.Keys.IDs()}
	}
	if len(kekIDs) == 0 && !o.Write {
		return nil, errors.New("encryption is configured, but no store holds encryption keys (keys/): the archive is empty or not encrypted; remove the encryption settings to read an unencrypted archive")
	}
	if o.Write {
		if len(current) == 0 && len(down) > 0 {
			return nil, &DataKeyUnavailableError{KeyID: o.Keys.Current.ID, Down: down}
		}
		if len(current) == 0 {
			// New archive, or the first write after a rotation: a new
			// data key, wrapped by the current key.
			name, b, id, aead, err := newDEK(o.Keys.Current)
			if err != nil {
				return nil, err
			}
			raw[name] = b
			kr.deks[id] = aead
			kr.kekOf[hex.EncodeToString(id[:])] = o.Keys.Current.ID
			current = append(current, hex.EncodeToString(id[:]))
			log.Info("created archive data key", zap.String("key_id", o.Keys.Current.ID), zap.String("data_key_id", hex.EncodeToString(id[:])))
		}
		sort.Strings(current)
		// Every store holds every key object (any one store is enough to
		// restore), and the key comes before any object it encrypts.
		for i, s := range stores {
			if isDown(i) {
				continue // SyncKeys, before anything else is written to it
			}
			for name, b := range raw {
				if held[i][name] {
					continue
				}
				if err := store.PutBytes(ctx, s, name, b); err != nil {
					return nil, fmt.Errorf("store encryption key in %s: %w", s.URL(), err)
				}
			}
		}
		cur, _ := hex.DecodeString(current[0])
		copy(kr.current[:], cur)
		kr.canWrite = true
		kr.raw = raw
	}
	out := make([]store.Store, len(stores))
	for i, s := range stores {
		out[i] = &Store{inner: s, kr: kr}
	}
	return out, nil
}

func dekAEAD(dekID string, dek []byte) ([8]byte, cipher.AEAD, error) {
	var id [8]byte
	b, err := hex.DecodeString(dekID)
	if err != nil || len(b) != 8 {
		return id, nil, fmt.Errorf("bad data key id %q", dekID)
	}
	copy(id[:], b)
	aead, err := newAEAD(dek)
	return id, aead, err
}

func unwrapDEK(kek Key, ko keyObject) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(ko.Wrapped)
	if err != nil || len(b) < 12+tagSize {
		return nil, errors.New("wrapped key is malformed")
	}
	aead, err := newAEAD(kek.secret)
	if err != nil {
		return nil, err
	}
	dek, err := aead.Open(nil, b[:12], b[12:], []byte("wayback dek "+ko.DEKID))
	if err != nil || len(dek) != KeySize {
		return nil, fmt.Errorf("key %s does not unwrap data key %s (damaged key object)", kek.ID, ko.DEKID)
	}
	return dek, nil
}

func newDEK(kek Key) (name string, b []byte, id [8]byte, aead cipher.AEAD, err error) {
	dek := make([]byte, KeySize)
	nonce := make([]byte, 12)
	if _, err = rand.Read(dek); err == nil {
		if _, err = rand.Read(id[:]); err == nil {
			_, err = rand.Read(nonce)
		}
	}
	if err != nil {
		return "", nil, id, nil, fmt.Errorf("generate data key: %w", err)
	}
	dekID := hex.EncodeToString(id[:])
	w, err := newAEAD(kek.secret)
	if err != nil {
		return "", nil, id, nil, err
	}
	wrapped := w.Seal(append([]byte(nil), nonce...), nonce, dek, []byte("wayback dek "+dekID))
	ko := keyObject{Format: "wayback-key", Version: 1, KEKID: kek.ID, DEKID: dekID, Created: time.Now().UTC(),
		Wrapped: base64.StdEncoding.EncodeToString(wrapped)}
	b, err = json.MarshalIndent(ko, "", "  ")
	if err != nil {
		return "", nil, id, nil, err
	}
	if aead, err = newAEAD(dek); err != nil {
		return "", nil, id, nil, err
	}
	return keyObjectKey(kek.ID, dekID), b, id, aead, nil
}

// keyring is the unwrapped data keys, shared by an archive's stores.
type keyring struct {
	deks     map[[8]byte]cipher.AEAD
	kekOf    map[string]string // DEK id -> KEK id, also for keys not unwrapped
	current  [8]byte
	canWrite bool
	// raw is every key object (name -> bytes) a writer found or created,
	// for SyncKeys. It does not change after Wrap.
	raw map[string][]byte
}

// Store is a store.Store that encrypts every object it puts and decrypts
// every object it gets. Sizes in List are plaintext sizes, so manifests and
// checks above it see the same numbers as on an unencrypted archive.
type Store struct {
	inner store.Store
	kr    *keyring
}

var _ store.Store = (*Store)(nil)

// Inner returns the wrapped store.
func (s *Store) Inner() store.Store { return s.inner }

// URL implements store.Store.
func (s *Store) URL() string { return s.inner.URL() }

// SyncKeys copies to this store every key object of the archive that it
// lacks, for a store that was down when a writer opened the archive (see
// Options.Down): the store then holds the key of every object written to it
// afterwards, and restores from it alone. Key objects are never
// overwritten. The archive must have been opened for writing.
func (s *Store) SyncKeys(ctx context.Context) error {
	if !s.kr.canWrite {
		return fmt.Errorf("sync encryption keys to %s: the archive was opened for reading only", s.URL())
	}
	objs, err := s.inner.List(ctx, KeyPrefix)
	if err != nil {
		return fmt.Errorf("list encryption keys in %s: %w", s.URL(), err)
	}
	have := map[string]bool{}
	for _, o := range objs {
		have[o.Key] = true
	}
	names := make([]string, 0, len(s.kr.raw))
	for name := range s.kr.raw {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if have[name] {
			continue
		}
		if err := store.PutBytes(ctx, s.inner, name, s.kr.raw[name]); err != nil {
			return fmt.Errorf("store encryption key in %s: %w", s.URL(), err)
		}
	}
	return nil
}

// Check implements store.Store.
func (s *Store) Check(ctx context.Context) error { return s.inner.Check(ctx) }

// Close implements store.Store.
func (s *Store) Close() error { return s.inner.Close() }

// Delete implements store.Store. Key objects are never deleted through
// the wrapper: losing one loses every object it encrypts.
func (s *Store) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, KeyPrefix) {
		return fmt.Errorf("delete %s from %s: encryption keys are not deleted", key, s.URL())
	}
	return s.inner.Delete(ctx, key)
}

// Put implements store.Store: the object is sealed under the current data
// key as it streams to the backend.
func (s *Store) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if strings.HasPrefix(key, KeyPrefix) {
		return fmt.Errorf("put %s to %s: %s is reserved for encryption keys", key, s.URL(), KeyPrefix)
	}
	if !s.kr.canWrite {
		return fmt.Errorf("put %s to %s: the archive was opened for reading only", key, s.URL())
	}
	se, err := newSealer(s.kr.deks[s.kr.current], s.kr.current, key, r, size)
	if err != nil {
		return fmt.Errorf("encrypt %s for %s: %w", key, s.URL(), err)
	}
	return s.inner.Put(ctx, key, se, se.total)
}

// Get implements store.Store: the object is decrypted and authenticated
// chunk by chunk as it is read; a damaged chunk fails the read with
// ErrAuthentication.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := s.inner.Get(ctx, key)
	if err != nil || strings.HasPrefix(key, KeyPrefix) {
		return rc, err
	}
	br := bufio.NewReaderSize(rc, ChunkSize+tagSize+1)
	hdr := make([]byte, HeaderSize)
	n, err := io.ReadFull(br, hdr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, fmt.Errorf("read %s from %s: %w", key, s.URL(), err)
	}
	if n < HeaderSize && n >= len(Magic) && string(hdr[:len(Magic)]) == Magic {
		rc.Close()
		return nil, fmt.Errorf("read %s from %s: %w: header cut short", key, s.URL(), ErrAuthentication)
	}
	h, err := parseHeader(hdr[:n])
	if errors.Is(err, ErrNotEncrypted) {
		rc.Close()
		return nil, fmt.Errorf("read %s from %s: %w, but encryption is configured: an unencrypted object in an encrypted archive is refused", key, s.URL(), ErrNotEncrypted)
	}
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("read %s from %s: %w", key, s.URL(), err)
	}
	aead, ok := s.kr.deks[h.dekID]
	if !ok {
		rc.Close()
		dek := dekIDString(h.dekID)
		if kek, known := s.kr.kekOf[dek]; known {
			return nil, fmt.Errorf("read %s from %s: encrypted with key id %s, which is not configured: add it to encryption.old_key_files", key, s.URL(), kek)
		}
		return nil, fmt.Errorf("read %s from %s: encrypted with data key %s, which no store's keys/ holds: the key object is lost", key, s.URL(), dek)
	}
	return &opener{aead: aead, h: h, hdr: hdr, key: key, r: br, c: rc, buf: make([]byte, ChunkSize+tagSize)}, nil
}

// List implements store.Store: key objects are left out, and sizes are
// the plaintext sizes.
func (s *Store) List(ctx context.Context, prefix string) ([]store.Object, error) {
	objs, err := s.inner.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := objs[:0]
	for _, o := range objs {
		if strings.HasPrefix(o.Key, KeyPrefix) {
			continue
		}
		if n, ok := PlainSize(o.Size); ok {
			o.Size = n
		}
		out = append(out, o)
	}
	return out, nil
}
