package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// File is a Store in a local directory (file:///path). Objects are written
// to a temporary file, fsynced and renamed into place, so a crash never
// leaves a half-written object under its final name.
type File struct {
	root string
}

func openFile(_ context.Context, u *url.URL, _ *zap.Logger) (Store, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("store URL %q: file URLs need an absolute path (file:///dir)", u.String())
	}
	if u.Path == "" {
		return nil, fmt.Errorf("store URL %q: empty path (use file:///absolute/dir)", u.String())
	}
	return NewFile(u.Path), nil
}

// NewFile returns a Store rooted at dir. The directory is created by Check
// or by the first Put.
func NewFile(dir string) *File { return &File{root: filepath.Clean(dir)} }

// URL implements Store.
func (f *File) URL() string { return "file://" + f.root }

// Check implements Store: the directory must exist (or be creatable) and be
// writable.
func (f *File) Check(_ context.Context) error {
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		return fmt.Errorf("store %s: cannot create directory: %w", f.URL(), err)
	}
	tmp, err := os.CreateTemp(f.root, ".check-*")
	if err != nil {
		return fmt.Errorf("store %s: directory is not writable: %w", f.URL(), err)
	}
	tmp.Close()
	return os.Remove(tmp.Name())
}

func (f *File) path(key string) (string, error) {
	clean := filepath.Clean("/" + key)
	if clean == "/" || strings.Contains(key, "..") {
		return "", fmt.Errorf("invalid object key %q", key)
	}
	return filepath.Join(f.root, filepath.FromSlash(clean)), nil
}

// Put implements Store.
func (f *File) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("put %s to %s: %w", key, f.URL(), err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return fmt.Errorf("put %s to %s: %w", key, f.URL(), err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	var src io.Reader = &ctxReader{ctx: ctx, r: r}
	if fh, ok := r.(*os.File); ok {
		// A local file (a spooled backup object) is copied by the kernel
		// (copy_file_range) instead of through this process 32 KiB at a
		// time; the copy is quick, so the context checks before and after
		// it are enough.
		src = fh
	}
	n, err := io.Copy(tmp, src)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil && n != size {
		err = fmt.Errorf("wrote %d bytes, expected %d", n, size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("put %s to %s: %w", key, f.URL(), err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get implements Store.
func (f *File) Get(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := f.path(key)
	if err != nil {
		return nil, err
	}
	fh, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get %s from %s: %w", key, f.URL(), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", key, f.URL(), err)
	}
	return fh, nil
}

// List implements Store.
func (f *File) List(_ context.Context, prefix string) ([]Object, error) {
	var out []Object
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == f.root {
				return filepath.SkipAll
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".check-") {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s in %s: %w", prefix, f.URL(), err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store.
func (f *File) Delete(_ context.Context, key string) error {
	p, err := f.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s from %s: %w", key, f.URL(), err)
	}
	return nil
}

// Close implements Store.
func (f *File) Close() error { return nil }

// ctxReader stops a long copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
