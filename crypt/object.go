package crypt

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Object format constants (docs/FORMAT.md, "Encrypted objects").
const (
	// Magic starts every encrypted object.
	Magic = "WBEN"
	// Version is the encrypted-object format version.
	Version = 1
	// HeaderSize is the size of an encrypted object's header.
	HeaderSize = 32
	// ChunkSize is how much plaintext each GCM chunk seals. Chunking keeps
	// memory flat for large backup files and lets a reader fail at the
	// first damaged chunk.
	ChunkSize = 64 << 10
	tagSize   = 16
)

// ErrAuthentication marks an object whose ciphertext does not
// authenticate: damaged, truncated, or not the object its key names.
var ErrAuthentication = errors.New("encrypted object failed authentication (corrupt, truncated or swapped)")

// ErrNotEncrypted marks an object without the encryption header in an
// archive read with encryption on.
var ErrNotEncrypted = errors.New("object is not encrypted")

// header is an encrypted object's fixed header.
type header struct {
	dekID  [8]byte
	prefix [8]byte // random per object: the high 8 bytes of every chunk's nonce
}

func (h header) bytes() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[4:], Version)
	binary.BigEndian.PutUint32(b[8:], ChunkSize)
	copy(b[16:], h.dekID[:])
	copy(b[24:], h.prefix[:])
	return b
}

func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < HeaderSize || string(b[:4]) != Magic {
		return h, ErrNotEncrypted
	}
	if v := binary.BigEndian.Uint16(b[4:]); v != Version {
		return h, fmt.Errorf("encrypted object format version %d is newer than this wayback knows (%d): upgrade wayback", v, Version)
	}
	if cs := binary.BigEndian.Uint32(b[8:]); cs != ChunkSize {
		return h, fmt.Errorf("%w: chunk size %d in header", ErrAuthentication, cs)
	}
	copy(h.dekID[:], b[16:24])
	copy(h.prefix[:], b[24:32])
	return h, nil
}

// dekIDString is how data key IDs are spelt in key object names.
func dekIDString(id [8]byte) string { return hex.EncodeToString(id[:]) }

// chunks is the number of chunks sealing size bytes: at least one, so
// that even an empty object carries an authenticated last chunk.
func chunks(size int64) int64 {
	if size <= 0 {
		return 1
	}
	return (size + ChunkSize - 1) / ChunkSize
}

// SealedSize is the stored size of an object of size plaintext bytes.
func SealedSize(size int64) int64 { return HeaderSize + size + chunks(size)*tagSize }

// PlainSize inverts SealedSize; ok is false when stored cannot be the size
// of a well-formed encrypted object.
func PlainSize(stored int64) (size int64, ok bool) {
	body := stored - HeaderSize
	if body < tagSize {
		return 0, false
	}
	n := (body + ChunkSize + tagSize - 1) / (ChunkSize + tagSize)
	size = body - n*tagSize
	return size, size >= 0 && SealedSize(size) == stored
}

// nonce is the per-chunk GCM nonce: the object's random prefix and the
// chunk counter, so that no two chunks under one data key share a nonce
// (the prefix is 64 random bits per object) and chunks cannot be
// reordered.
func nonce(prefix [8]byte, counter uint32) []byte {
	n := make([]byte, 12)
	copy(n, prefix[:])
	binary.BigEndian.PutUint32(n[8:], counter)
	return n
}

// aad binds each chunk to the header, to whether it is the last chunk
// (so truncation at a chunk boundary is detected) and to the object's key
// (so objects cannot be swapped on the bucket).
func aad(hdr []byte, last bool, key string) []byte {
	b := make([]byte, 0, len(hdr)+1+len(key))
	b = append(b, hdr...)
	if last {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return append(b, key...)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealer is the ciphertext of a plaintext ReadSeeker, as a ReadSeeker:
// backends rewind to retry and to compute checksums, so any position must
// be reproducible. A chunk's ciphertext is deterministic given the header,
// so re-encrypting it after a seek gives the same bytes.
type sealer struct {
	aead  cipher.AEAD
	h     header
	hdr   []byte
	key   string
	src   io.ReadSeeker
	start int64 // src position of the plaintext's first byte
	size  int64 // plaintext bytes
	total int64 // ciphertext bytes
	pos   int64

	chunk int64 // index of the chunk in buf, -1: none
	buf   []byte
	plain []byte
}

func newSealer(aead cipher.AEAD, dekID [8]byte, key string, src io.ReadSeeker, size int64) (*sealer, error) {
	start, err := src.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	h := header{dekID: dekID}
	if _, err := rand.Read(h.prefix[:]); err != nil {
		return nil, fmt.Errorf("random nonce prefix: %w", err)
	}
	return &sealer{aead: aead, h: h, hdr: h.bytes(), key: key, src: src, start: start, size: size,
		total: SealedSize(size), chunk: -1, plain: make([]byte, ChunkSize)}, nil
}

func (s *sealer) Read(p []byte) (int, error) {
	if s.pos >= s.total {
		return 0, io.EOF
	}
	if s.pos < HeaderSize {
		n := copy(p, s.hdr[s.pos:])
		s.pos += int64(n)
		return n, nil
	}
	off := s.pos - HeaderSize
	idx, in := off/(ChunkSize+tagSize), off%(ChunkSize+tagSize)
	if idx != s.chunk {
		if err := s.seal(idx); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.buf[in:])
	s.pos += int64(n)
	return n, nil
}

func (s *sealer) seal(idx int64) error {
	from := idx * ChunkSize
	n := min(ChunkSize, s.size-from)
	if _, err := s.src.Seek(s.start+from, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.ReadFull(s.src, s.plain[:n]); err != nil {
		return fmt.Errorf("read plaintext at %d: %w", from, err)
	}
	last := idx == chunks(s.size)-1
	s.buf = s.aead.Seal(s.buf[:0], nonce(s.h.prefix, uint32(idx)), s.plain[:n], aad(s.hdr, last, s.key))
	s.chunk = idx
	return nil
}

func (s *sealer) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += s.pos
	case io.SeekEnd:
		offset += s.total
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	s.pos = offset
	return offset, nil
}

// opener decrypts an object as it is read, chunk by chunk.
type opener struct {
	aead    cipher.AEAD
	h       header
	hdr     []byte
	key     string
	r       *bufio.Reader
	c       io.Closer
	counter int64
	buf     []byte
	out     []byte
	done    bool
	err     error
}

func (o *opener) Read(p []byte) (int, error) {
	for len(o.out) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		o.err = o.next()
	}
	n := copy(p, o.out)
	o.out = o.out[n:]
	return n, nil
}

func (o *opener) next() error {
	n, err := io.ReadFull(o.r, o.buf[:ChunkSize+tagSize])
	last := false
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		last = true
	case err != nil:
		return err
	default:
		if _, perr := o.r.Peek(1); errors.Is(perr, io.EOF) {
			last = true
		} else if perr != nil {
			return perr
		}
	}
	if n < tagSize {
		return fmt.Errorf("%w: %s ends inside chunk %d", ErrAuthentication, o.key, o.counter)
	}
	if o.counter > 1<<32-1 {
		return fmt.Errorf("%w: %s has too many chunks", ErrAuthentication, o.key)
	}
	plain, aerr := o.aead.Open(o.buf[:0], nonce(o.h.prefix, uint32(o.counter)), o.buf[:n], aad(o.hdr, last, o.key))
	if aerr != nil {
		return fmt.Errorf("%w: %s chunk %d", ErrAuthentication, o.key, o.counter)
	}
	o.counter++
	o.out = plain
	o.done = last
	return nil
}

func (o *opener) Close() error { return o.c.Close() }

// sealBytes encrypts a whole object in memory (key objects' tests, small
// helpers).
func sealBytes(aead cipher.AEAD, dekID [8]byte, key string, plain []byte) ([]byte, error) {
	s, err := newSealer(aead, dekID, key, bytes.NewReader(plain), int64(len(plain)))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(s)
}
